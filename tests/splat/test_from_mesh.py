"""Surface sampling and disk gaussians."""

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from gen3d.errors import StageOutputError
from gen3d.orientation import quaternion_to_matrix
from gen3d.results import MeshAsset
from gen3d.splat.from_mesh import (
    gaussians_from_samples,
    mesh_to_gaussians,
    sample_surface,
)


def coloured(mesh: trimesh.Trimesh, rgb: np.ndarray | None = None) -> MeshAsset:
    colors = np.full((len(mesh.vertices), 3), 200, np.uint8) if rgb is None else rgb
    return MeshAsset(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), colors)


def test_samples_lie_on_the_surface_with_outward_normals_and_even_spacing() -> None:
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    samples = sample_surface(coloured(box), 6000, seed=1)
    assert samples.points.shape == (6000, 3) and samples.points.dtype == np.float32
    # On the surface: one coordinate at the box's half extent.
    np.testing.assert_allclose(np.max(np.abs(samples.points) / [0.5, 0.3, 0.2], axis=1), 1.0, atol=1e-5)
    # Outward unit normals: pointing away from the centre.
    np.testing.assert_allclose(np.linalg.norm(samples.normals, axis=1), 1.0, atol=1e-5)
    assert (np.sum(samples.normals * samples.points, axis=1) > 0).all()
    # Area-weighted: share of samples on the two 1.0 x 0.6 faces matches their share of area.
    top_bottom = np.isclose(np.abs(samples.points[:, 2]), 0.2, atol=1e-5).mean()
    assert top_bottom == pytest.approx(2 * 0.6 / (2 * (0.6 + 0.4 + 0.24)), abs=0.02)
    # Even: nearest-neighbour distances vary much less than for i.i.d. samples (CV ~0.52).
    nearest = cKDTree(samples.points).query(samples.points, k=2)[0][:, 1]
    assert nearest.std() / nearest.mean() < 0.4
    assert np.median(samples.spacing) == pytest.approx(np.sqrt(box.area / 6000), rel=0.25)


def test_colours_are_barycentric_blends_and_seeded() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    rgb = np.round(255 * (sphere.vertices + 1) / 2).astype(np.uint8)  # colour = position ramp
    mesh = coloured(sphere, rgb)
    samples = sample_surface(mesh, 2000, seed=5)
    np.testing.assert_allclose(samples.colors, (samples.points + 1) / 2, atol=0.01)
    again = sample_surface(mesh, 2000, seed=5)
    np.testing.assert_array_equal(samples.points, again.points)
    assert not np.array_equal(sample_surface(mesh, 2000, seed=6).points, samples.points)


def test_gaussians_are_flat_disks_on_the_normal_with_varied_rotations() -> None:
    plane = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    samples = sample_surface(coloured(plane), 500)
    g = gaussians_from_samples(samples, opacity=0.9)
    local_z = quaternion_to_matrix(g.rotations.astype(np.float64))[:, :, 2]
    np.testing.assert_allclose(local_z, samples.normals, atol=1e-5)  # all +z here
    assert np.abs(g.rotations[:, 1:]).max() > 0.1  # yet not all identity
    scales = np.exp(g.log_scales)
    assert (scales[:, 2] < 0.1 * scales[:, 0]).all() and np.allclose(scales[:, 0], scales[:, 1])
    np.testing.assert_allclose(1 / (1 + np.exp(-g.opacity)), 0.9, atol=1e-6)
    np.testing.assert_allclose(0.5 + 0.28209479177387814 * g.f_dc, samples.colors, atol=1e-6)


def test_colours_can_be_overridden_and_are_checked() -> None:
    samples = sample_surface(coloured(trimesh.creation.icosphere(1)), 100)
    red = np.tile([1.0, 0.0, 0.0], (100, 1))
    g = gaussians_from_samples(samples, colors=red)
    np.testing.assert_allclose(0.5 + 0.28209479177387814 * g.f_dc, red, atol=1e-6)
    with pytest.raises(ValueError, match="colors"):
        gaussians_from_samples(samples, colors=red[:50])
    with pytest.raises(ValueError, match="opacity"):
        gaussians_from_samples(samples, opacity=1.0)


def test_bad_inputs() -> None:
    empty = MeshAsset(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8))
    with pytest.raises(StageOutputError, match="empty"):
        mesh_to_gaussians(empty, 100)
    with pytest.raises(ValueError, match="count"):
        sample_surface(coloured(trimesh.creation.icosphere(1)), 0)
