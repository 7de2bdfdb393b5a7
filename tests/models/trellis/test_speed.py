"""The fast path's second flow: the dense route of equal-length batches and its dynamic-shape compile."""

import pytest
import torch
from torch._dynamo.utils import counters

from gen3d.models.trellis.config import TrellisConfig
from gen3d.models.trellis.pipeline import IMAGE_SIZE, TrellisImageTo3D
from gen3d.models.trellis.slat_flow import SLatFlowConfig, SLatFlowModel
from gen3d.models.trellis.sparse.tensor import SparseTensor
from gen3d.models.trellis.speed import compile_latent_flow_, speed_up_
from tests.models.trellis.sparse_cases import random_feats, shell_coords

SEED = 25


def _pair(radius: float, seed: int) -> SparseTensor:
    """A condition + uncondition batch: one shell's voxels twice (the sampler's guided call)."""
    coords = shell_coords(16, [radius], seed)
    return SparseTensor(coords, random_feats(coords.shape[0], SLatFlowConfig.tiny().in_channels, seed)).repeat_batch(2)


def test_equal_length_items_take_the_dense_route_with_the_sparse_numbers() -> None:
    torch.manual_seed(SEED)
    flow = SLatFlowModel(SLatFlowConfig.tiny()).eval()
    x = _pair(5.0, SEED)
    block = flow.blocks[0]
    tokens = torch.randn(x.feats.shape[0], flow.cfg.model_channels, generator=torch.Generator().manual_seed(SEED))
    h, mod = x.replace(tokens), torch.randn(2, flow.cfg.model_channels)
    context = torch.randn(2, 6, flow.cfg.cond_channels)
    calls = []
    dense = block.forward_dense
    block.forward_dense = lambda *args: calls.append(args[0].shape) or dense(*args)
    with torch.no_grad():
        routed = block(h, mod, context).feats
        segments = block.forward_sparse(h, mod, context, None).feats
    assert calls == [torch.Size([2, x.feats.shape[0] // 2, flow.cfg.model_channels])]
    torch.testing.assert_close(routed, segments, rtol=1e-6, atol=1e-6)


@pytest.fixture
def tiny_pipeline() -> TrellisImageTo3D:
    torch.manual_seed(SEED)
    return TrellisImageTo3D.from_config(TrellisConfig.tiny(), dtype=torch.float32, device=torch.device("cpu"))


def test_compiled_second_flow_never_recompiles_for_another_voxel_count(tiny_pipeline: TrellisImageTo3D) -> None:
    flow = tiny_pipeline.slat_flow_model
    cond = torch.randn(2, 6, flow.cfg.cond_channels, generator=torch.Generator().manual_seed(SEED))
    inputs = [_pair(radius, SEED + i) for i, radius in enumerate([4.0, 5.5, 7.0])]
    assert len({x.feats.shape[0] for x in inputs}) == 3

    def guided(x: SparseTensor) -> torch.Tensor:
        return flow(x, torch.tensor([700.0, 700.0]), cond).feats

    def unguided(x: SparseTensor) -> torch.Tensor:
        return flow(_first(x), torch.tensor([300.0]), cond[:1]).feats

    with torch.no_grad():
        eager = [(guided(x), unguided(x)) for x in inputs]
        torch._dynamo.reset()
        counters.clear()
        compile_latent_flow_(tiny_pipeline, backend="eager")
        graphs = []
        for x, (want_guided, want_unguided) in zip(inputs, eager):
            torch.testing.assert_close(guided(x), want_guided, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(unguided(x), want_unguided, rtol=1e-5, atol=1e-5)
            graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    # The first structure compiles each batch size (a guided pair, an unguided single; a single's
    # first block sees a view of the flow's rows, the next ones a block's output: 0/1 sizes
    # specialise, so up to three graphs), shared by every block (weights are inputs). Other voxel
    # counts reuse them.
    assert 2 <= graphs[0] <= 3
    assert graphs == [graphs[0]] * 3


def _first(x: SparseTensor) -> SparseTensor:
    """The first item of a pair, as its own batch of one (an unguided step)."""
    rows = x.feats.shape[0] // 2
    return SparseTensor(x.coords[:rows], x.feats[:rows])


def test_cuda_graphs_refuse_a_cpu_pipeline(tiny_pipeline: TrellisImageTo3D) -> None:
    with pytest.raises(ValueError, match="cuda_graphs: the first flow must be on CUDA"):
        speed_up_(tiny_pipeline, compile_blocks=False, cuda_graphs=True)


def test_attention_kernels_that_cannot_run_here_fail_the_build(tiny_pipeline: TrellisImageTo3D) -> None:
    with pytest.raises(ValueError, match=r"attention: none of \['cudnn'\] runs on cpu"):
        speed_up_(tiny_pipeline, compile_blocks=False, cuda_graphs=False, attention_backends=("cudnn",))
    assert tiny_pipeline.attention_backends == ()


def _attention_kernels(pipeline: TrellisImageTo3D) -> tuple[set[str], torch.Tensor]:
    """The SDPA kernels one two-step ``run`` called, and its mesh's vertices."""
    image = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        output = pipeline.run(image, seed=SEED, structure_steps=2, latent_steps=2)
    kernels = {event.key for event in prof.key_averages() if event.key.startswith("aten::_scaled_dot_product")}
    assert output.mesh is not None
    return kernels, output.mesh.vertices


def test_listed_attention_kernels_are_the_ones_that_run_and_keep_the_asset(tiny_pipeline: TrellisImageTo3D) -> None:
    default_kernels, default_vertices = _attention_kernels(tiny_pipeline)
    speed_up_(tiny_pipeline, compile_blocks=False, cuda_graphs=False, attention_backends=("math",))
    math_kernels, math_vertices = _attention_kernels(tiny_pipeline)
    assert "aten::_scaled_dot_product_attention_math" not in default_kernels
    assert math_kernels == {"aten::_scaled_dot_product_attention_math"}
    torch.testing.assert_close(math_vertices, default_vertices, rtol=1e-5, atol=1e-5)
