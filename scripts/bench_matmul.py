"""Dense matrix-product throughput (TFLOP/s) of this device: the ceiling the FLUX step rates are compared with.

Multiplies two random N x N matrices in ``--dtype`` and counts 2 N^3 floating-point operations per
product. Times are the median of ``--repeats`` products after ``--warmup`` (CUDA-synchronised).

Usage: python -m scripts.bench_matmul [--device cuda] [--dtype bf16] [--sizes 4096 8192 16384]
"""

import argparse
import statistics
import time

import torch

from gen3d.devices import TORCH_DTYPES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    return parser.parse_args()


def product_seconds(a: torch.Tensor, b: torch.Tensor, warmup: int, repeats: int) -> float:
    """Median seconds of one ``a @ b``."""

    def sync() -> None:
        if a.device.type == "cuda":
            torch.cuda.synchronize(a.device)

    for _ in range(warmup):
        a @ b
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    device, dtype = torch.device(args.device), TORCH_DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.dtype}")
    print("| N | median | TFLOP/s |")
    print("|---:|---:|---:|")
    for size in args.sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        seconds = product_seconds(a, b, args.warmup, args.repeats)
        print(f"| {size} | {seconds * 1e3:.2f} ms | {2 * size**3 / seconds / 1e12:.3g} |")


if __name__ == "__main__":
    main()
