"""Inject a fatal GPU fault from an MPS client: a kernel that stores far outside its allocation.

    CUDA_MPS_PIPE_DIRECTORY=/tmp/gen3d-mps-XXXX/pipe python -m scripts.mps_fault

Run with the pipe folder of a running gen3d MPS daemon, this process joins that card's MPS
server and faults it (an illegal address is fatal to a CUDA context). Under MPS, every client of
the server shares the fault: the stage replicas' next calls fail, their health checks fail, and
Serve restarts them. ``scripts/card_limit.py`` runs it under load and records what the clients
got and when the graph answered again. Exits 0 once the fault was raised (the expected outcome).
"""

import sys

import torch
import triton
import triton.language as tl

#: Bytes past the buffer's start: far beyond any allocation of this process.
FAR = 1 << 40


@triton.jit
def _store_at(pointer, offset):
    tl.store(pointer + offset, 1.0)


def main() -> int:
    buffer = torch.zeros(1, device="cuda")
    try:
        _store_at[(1,)](buffer, FAR // buffer.element_size())
        torch.cuda.synchronize()
    except RuntimeError as err:
        print(f"fault raised: {err}")
        return 0
    print("the out-of-bounds store did not fault", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
