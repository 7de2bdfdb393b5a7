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
    out = bench.PlantedCornerDistance(_Constant(SparseTensor(coords, feats)))(None)
    assert torch.equal(out.feats[:, 8:], feats[:, 8:])
    assert torch.allclose(out.feats[:, :8], planted_corner_distance(bench.PLANT, coords[:, 1:], bench.MESH_GRID, None))
    assert (out.feats[1, :8] < 0).all() and (out.feats[0, :8] > 0).all()  # the grid's centre is inside the sphere


@pytest.mark.skipif(reference_root() is None, reason=f"needs the reference checkout ({REFERENCE_ENV})")
def test_reference_pipeline_runs_planted_at_tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    from gen3d.models.trellis.config import TrellisConfig

    cfg = TrellisConfig.tiny()
    monkeypatch.setattr(bench, "MESH_GRID", cfg.mesh_decoder.resolution * 4)
    ref = import_reference()
    with torch.no_grad(), cuda_as_cpu():
        pipeline = bench.reference_pipeline(ref, cfg, torch.device("cpu"))
        (row,) = bench.bench_reference(pipeline, [1], 1, torch.device("cpu"))
    assert row["faces"] > 0 and row["gaussians"] > 0
    assert all(row[f"phase_{name}"] > 0 for name in bench.PHASES)
