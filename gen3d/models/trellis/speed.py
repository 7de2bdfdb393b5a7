"""TRELLIS on the GPU with the same arithmetic: compiled blocks and a CUDA-graphed first flow.

Fused kernels round bf16 differently from eager ones (on an H200 the structured latent moved by
1.1e-2, relative, after 25 steps; BENCHMARKS.md); in fp32 the compiled path matches eager within 1e-5.

- ``compile_blocks_`` compiles each dense transformer block (the conditioner's and the first
  flow's) with ``torch.compile``: every block of a stack shares one compiled graph, since their code
  is the same and their weights are inputs.
- ``graph_structure_flow_`` replays the first flow's step as one CUDA graph per batch size (1 for
  unguided steps, 2 for guided ones). Its shapes never change (4096 tokens, 1374 condition tokens),
  so 25 steps cost 25 replays instead of ~25 x 24 x 20 kernel launches from Python. The condition's
  keys and values are inputs of the graph, copied into its buffers at each replay (135 MB, ~50 us).

- ``compile_latent_flow_`` compiles the second flow's transformer blocks on their dense path
  (``ModulatedSparseTransformerCrossBlock.forward_dense``) with the voxel count as a dynamic size:
  one graph for every request's structure, whose norms, casts, modulations and gates fuse into a few
  kernels. Eager, that elementwise work cost about as much GPU time as the matrix products.

The second flow's convolution blocks and the decoders stay eager: they are a small share of the time.

- ``prefer_attention_`` names the SDPA kernels the pipeline's attention may use, in priority order.
  At the flows' shapes on an H200 cuDNN's kernel took 0.29 ms where flash's took 0.46 (BENCHMARKS.md).
"""

import logging
from collections.abc import Sequence

import torch
from torch import nn

from gen3d.models.trellis.layers import attention, sdpa_priority
from gen3d.models.trellis.pipeline import TrellisImageTo3D
from gen3d.models.trellis.ss_flow import SparseStructureFlowModel
from gen3d.parts.cuda_graphs import CudaGraphed

logger = logging.getLogger(__name__)


def compile_blocks_(model: TrellisImageTo3D) -> None:
    """Compile the conditioner's and the first flow's transformer blocks in place."""
    stacks: list[nn.ModuleList] = [model.conditioner.blocks, model.sparse_structure_flow_model.blocks]
    for stack in stacks:
        for block in stack:
            block.compile()
    logger.info("trellis: compiled %d dense transformer blocks", sum(len(stack) for stack in stacks))


def compile_latent_flow_(model: TrellisImageTo3D, backend: str = "inductor") -> None:
    """Compile the second flow's transformer blocks in place, the voxel count dynamic.

    Args:
        model: the pipeline.
        backend: ``torch.compile``'s backend (tests trace with ``eager`` to count graphs on a CPU).
    """
    blocks = model.slat_flow_model.blocks
    for block in blocks:
        # An instance attribute shadows the method: the block's forward calls the compiled one.
        block.forward_dense = torch.compile(block.forward_dense, dynamic=True, backend=backend)
    logger.info("trellis: compiled %d sparse transformer blocks (dynamic voxel count)", len(blocks))


def prefer_attention_(model: TrellisImageTo3D, backends: Sequence[str]) -> None:
    """Let the pipeline's attention use only ``backends``, in this order (empty: PyTorch's choice).

    Raises:
        ValueError: none of them runs the model's attention on its device and dtype (cuDNN and the
            memory-efficient kernel are CUDA-only), found now rather than at the first request.
    """
    probe = torch.zeros(1, 8, 2, 64, device=model.device, dtype=model.dtype)
    try:
        with sdpa_priority(backends):
            attention(probe, probe, probe)
    except RuntimeError as err:
        raise ValueError(f"attention: none of {list(backends)} runs on {model.device} in {model.dtype}: {err}") from err
    model.attention_backends = tuple(backends)


def speed_up_(model: TrellisImageTo3D, compile_blocks: bool, cuda_graphs: bool, attention_backends: Sequence[str] = ()) -> None:
    """The fast path a config asks for: compiled blocks (both flows and the conditioner), the first
    flow replayed as CUDA graphs (CUDA only: raises on another device, no silent eager run), and the
    SDPA kernels attention may use. The kernels are set first: compiling and capturing keep them."""
    prefer_attention_(model, attention_backends)
    if compile_blocks:
        compile_blocks_(model)
        compile_latent_flow_(model)
    if cuda_graphs:
        graph_structure_flow_(model)


class GraphedStructureFlow:
    """The first flow as ``GuidedVelocity`` calls it, replayed from CUDA graphs (not a module: the
    flow's weights stay registered once, under the pipeline's ``sparse_structure_flow_model``).

    Args:
        flow: the sparse-structure flow, on CUDA.
        pool: graph memory pool shared with other graphs of the stage, or None.
    """

    def __init__(self, flow: SparseStructureFlowModel, pool: tuple[int, int] | None = None) -> None:
        self.flow = flow
        self.cfg = flow.cfg
        self._graphed = CudaGraphed(self._step, "trellis.sparse_structure_flow", pool)

    def project_context(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.flow.project_context(cond)

    def _step(self, x: torch.Tensor, t: torch.Tensor, *flat_kv: torch.Tensor) -> torch.Tensor:
        pairs = list(zip(flat_kv[0::2], flat_kv[1::2], strict=True))
        return self.flow(x, t, context_kv=pairs)

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, context_kv: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        # Graph inputs must be contiguous buffers of fixed shape: sliced keys and values are copied.
        flat = [tensor.contiguous() for pair in context_kv for tensor in pair]
        return self._graphed(x.contiguous(), t, *flat)

    @property
    def captured(self) -> int:
        """Batch sizes with a graph so far."""
        return self._graphed.captured


def graph_structure_flow_(model: TrellisImageTo3D) -> GraphedStructureFlow:
    """Route the first flow through CUDA graphs (captured on first use of each batch size)."""
    if model.device.type != "cuda":
        raise ValueError(f"cuda_graphs: the first flow must be on CUDA, got {model.device}")
    graphed = GraphedStructureFlow(model.sparse_structure_flow_model)
    model.structure_flow_runner = graphed
    return graphed
