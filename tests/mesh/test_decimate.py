"""Quadric decimation: face targets, Chamfer error against the full mesh, colours through collapses."""

import numpy as np
import pytest
import torch

from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import collapse_roots, decimate
from gen3d.mesh.metrics import chamfer_distance, extent, signed_volumes
from gen3d.mesh.planted import bumpy_blob, gradient
from gen3d.results import MeshAsset


def test_collapse_roots_follow_chains() -> None:
    # 3 -> 2, then 2 -> 0: both end at 0; 1 and 4 are untouched.
    roots = collapse_roots(np.array([[2, 3], [0, 2]]), 5)
    np.testing.assert_array_equal(roots, [0, 1, 0, 0, 4])


@pytest.mark.parametrize("target", [30_000, 20_000, 10_000])
def test_decimation_reaches_the_target_and_stays_close(blob: MeshAsset, target: int) -> None:
    source = clean(blob)
    assert len(source.faces) > 200_000
    reduced = decimate(source, target)
    assert target - 50 <= len(reduced.faces) <= target
    assert signed_volumes(reduced.vertices, reduced.faces).sum() > 0  # winding survives
    if target == 20_000:
        error = chamfer_distance((source.vertices, source.faces), (reduced.vertices, reduced.faces))
        assert error <= 0.005 * extent(source.vertices)


def test_colours_follow_their_collapsed_vertices() -> None:
    """Vertex colours of a linear colour ramp stay on the ramp: the mean of a cluster is its centre's."""
    source = clean(bumpy_blob(128, gradient))
    reduced = decimate(source, 5_000)
    expected = gradient(torch.from_numpy(reduced.vertices)).numpy() * 255.0
    error = np.abs(reduced.vertex_colors.astype(np.float64) - expected)
    assert error.mean() < 1.5 and error.max() < 12.0


def test_small_meshes_pass_through_and_bad_targets_fail(blob_20k: MeshAsset) -> None:
    assert decimate(blob_20k, 50_000) is blob_20k
    with pytest.raises(ValueError, match="target_faces"):
        decimate(blob_20k, 3)
