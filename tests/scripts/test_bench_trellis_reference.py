"""scripts/bench_trellis_reference.py: the planted decisions it puts into the reference, and (with
the reference checkout) its pipeline end to end at tiny sizes on the CPU."""

import pytest
import torch

from gen3d.models.trellis.planted import planted_corner_distance, planted_structure
from gen3d.models.trellis.sparse.tensor import SparseTensor
from scripts import bench_trellis_reference as bench
from tests.models.trellis.reference import (
    REFERENCE_ENV,
    cuda_as_cpu,
    import_reference,
    reference_root,
)


class _Constant(torch.nn.Module):
    def __init__(self, value: object):
        super().__init__()
        self.value = value

    def forward(self, _: object) -> object:
        return self.value


def test_planted_occupancy_is_the_shell_whatever_the_decoder_says() -> None:
    logits = torch.full((1, 1, 16, 16, 16), 5.0)  # a decoder that says "all occupied"
    planted = bench.PlantedOccupancy(_Constant(logits))(None)
    occupied = torch.argwhere(planted > 0)[:, [0, 2, 3, 4]].int()  # the reference's own read-out
    expected = planted_structure(bench.PLANT, 16, None)
    assert planted.shape == logits.shape and 0 < len(occupied) < 16**3
    assert torch.equal(occupied, expected)


def test_planted_corner_distance_replaces_only_the_sdf_channels() -> None:
    coords = torch.tensor([[0, 10, 20, 30], [0, 128, 128, 128]], dtype=torch.int32)
    feats = torch.randn(2, 101)
    out = bench.PlantedCornerDistance(_Constant(SparseTensor(coords, feats)), 256)(None)
    assert torch.equal(out.feats[:, 8:], feats[:, 8:])
    assert torch.allclose(out.feats[:, :8], planted_corner_distance(bench.PLANT, coords[:, 1:], 256, None))
    assert (out.feats[1, :8] < 0).all() and (out.feats[0, :8] > 0).all()  # the grid's centre is inside the sphere


@pytest.mark.skipif(reference_root() is None, reason=f"needs the reference checkout ({REFERENCE_ENV})")
def test_reference_pipeline_runs_planted_at_tiny_sizes() -> None:
    from gen3d.models.trellis.config import TrellisConfig

    cfg = TrellisConfig.tiny()
    ref = import_reference()
    with torch.no_grad(), cuda_as_cpu():
        pipeline = bench.reference_pipeline(ref, cfg, torch.device("cpu"))
        (row,) = bench.bench_reference(pipeline, [1], 1, torch.device("cpu"))
    assert row["faces"] > 0 and row["gaussians"] > 0
    assert all(row[f"phase_{name}"] > 0 for name in bench.PHASES)


def test_markdown_puts_the_reference_beside_ours() -> None:
    meta = {"device": "GPU", "torch": "2.x", "xformers": "xformers"}
    reference = [{"steps": 25, "phase_get_cond": 0.1, "phase_sample_sparse_structure": 1.0, "phase_sample_slat": 2.0,
                  "phase_decode_slat": 0.5, "generate_s": 3.6, "faces": 364188, "gaussians": 641024}]  # fmt: skip
    ours = [{"variant": "fast", "steps": 25, "phase_condition": 0.05, "phase_sample_structure": 0.5, "phase_sample_latent": 0.8,
             "phase_decode_mesh": 0.1, "phase_decode_gaussians": 0.07, "generate": 1.5, "total": 2.2, "raw_faces": 364188.0,
             "gaussians": 641024}]  # fmt: skip
    rows = bench.markdown(reference, ours, meta).splitlines()[-2:]
    assert rows[0].startswith("| reference | 25 |") and "**3.600 s**" in rows[0] and "364,188" in rows[0]
    # Ours: the decoders add up, and generation is the GLB request's generate plus the Gaussian decoder.
    assert rows[1].startswith("| ours (fast) | 25 |") and "| 0.170 |" in rows[1] and "**1.570 s**" in rows[1] and "2.200 s" in rows[1]
