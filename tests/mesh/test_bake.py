"""Baking: conservative UV rasterisation, surface points, colours from a field, dilation into gutters."""

import numpy as np
import pytest
import torch

from gen3d.mesh.bake import (
    bake_texture,
    dilate,
    pull_push_fill,
    rasterize_uv,
    surface_points,
)
from gen3d.mesh.metrics import point_triangle_distance
from gen3d.mesh.planted import checker, gradient
from gen3d.mesh.unwrap import unwrap
from gen3d.results import MeshAsset, UVMesh
from gen3d.splat.render import mip_pyramid, sample_bilinear

SIZE = 64
UV_TRIANGLE = np.array([[0.1, 0.15], [0.8, 0.3], [0.35, 0.9]], np.float32)


def texel_centres(size: int) -> np.ndarray:
    """(size², 2) texel centres in texel units (x, y), row-major like the atlas."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x.reshape(-1), y.reshape(-1)], axis=1) + 0.5


def distance_to_triangle(size: int, uv_triangle: np.ndarray) -> np.ndarray:
    """Brute force: distance (size²,) in texels from each texel centre to the triangle."""
    tri = np.concatenate([uv_triangle * size, np.zeros((3, 1))], axis=1)
    points = np.concatenate([texel_centres(size), np.zeros((size * size, 1))], axis=1)
    return point_triangle_distance(points, tri[None].repeat(len(points), 0))


SLIVER = np.array([[0.1, 0.5], [0.9, 0.45], [0.9, 0.55]], np.float32)


@pytest.mark.parametrize("triangle", [UV_TRIANGLE, SLIVER], ids=["triangle", "sliver"])
@pytest.mark.parametrize("margin", [0.0, 1.5])
def test_rasterisation_covers_the_texels_within_the_margin(triangle: np.ndarray, margin: float) -> None:
    coverage = rasterize_uv(torch.from_numpy(triangle), torch.tensor([[0, 1, 2]]), SIZE, margin)
    distance = distance_to_triangle(SIZE, triangle)
    covered = np.sort(coverage.texel.numpy())
    assert np.isin(np.flatnonzero(distance <= margin + 1e-4), covered).all()
    assert distance[covered].max() <= np.sqrt(2) * margin + 1e-4
    if margin == 0.0:  # strict rasterisation: exactly the centres inside
        np.testing.assert_array_equal(covered, np.flatnonzero(distance <= 1e-4))
    assert (coverage.face == 0).all()


def test_barycentrics_point_at_the_nearest_point_of_the_triangle() -> None:
    coverage = rasterize_uv(torch.from_numpy(UV_TRIANGLE), torch.tensor([[0, 1, 2]]), SIZE, 1.5)
    bary = coverage.bary.numpy()
    assert bary.min() >= 0.0
    np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-6)
    sampled = bary @ (UV_TRIANGLE * SIZE)
    centres = texel_centres(SIZE)[coverage.texel.numpy()]
    gap = np.linalg.norm(sampled - centres, axis=1)
    inside = distance_to_triangle(SIZE, UV_TRIANGLE)[coverage.texel.numpy()] == 0
    np.testing.assert_allclose(gap[inside], 0.0, atol=1e-3)
    assert gap.max() <= 1.5 + 1e-3


def test_shared_edges_go_to_the_triangle_the_texel_is_in() -> None:
    uvs = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # split along the diagonal x = y
    coverage = rasterize_uv(uvs, faces, SIZE, margin=1.5)
    centres = texel_centres(SIZE)[coverage.texel.numpy()]
    # Beyond the square, texels near a shared corner are equally close to both triangles.
    square = ((centres > 0.1 * SIZE) & (centres < 0.9 * SIZE)).all(axis=1)
    below = square & (centres[:, 1] < centres[:, 0] - 0.01)
    above = square & (centres[:, 1] > centres[:, 0] + 0.01)
    assert (coverage.face.numpy()[below] == 0).all() and (coverage.face.numpy()[above] == 1).all()


def test_surface_points_of_a_flat_mapped_square() -> None:
    """A square whose UVs are its own x/y: each texel's point is its centre, z = 0."""
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    coverage = rasterize_uv(vertices[:, :2], faces, SIZE, margin=0.0)
    points = surface_points(coverage, vertices, faces).numpy()
    assert len(points) == SIZE * SIZE
    np.testing.assert_allclose(points[:, :2], texel_centres(SIZE)[coverage.texel.numpy()] / SIZE, atol=1e-6)
    np.testing.assert_allclose(points[:, 2], 0.0)


def test_dilation_copies_the_nearest_island_and_the_fill_leaves_no_hole() -> None:
    texture = torch.zeros(32, 32, 3)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    texture[4:8, 4:8] = torch.tensor([1.0, 0.0, 0.0])
    texture[20:28, 20:28] = torch.tensor([0.0, 0.0, 1.0])
    mask[4:8, 4:8] = mask[20:28, 20:28] = True
    grown, grown_mask = dilate(texture, mask, 3)
    assert grown_mask.sum() == 10 * 10 + 14 * 14
    np.testing.assert_allclose(grown[1, 1].numpy(), [1, 0, 0])  # 3 rings from the red island
    np.testing.assert_allclose(grown[30, 30].numpy(), [0, 0, 1])
    assert not grown_mask[15, 15]
    filled = pull_push_fill(grown, grown_mask)
    assert (filled[grown_mask] == grown[grown_mask]).all()
    assert (filled.sum(dim=2) > 0.99).all()  # every texel now holds a mix of the two colours


def test_baked_texture_holds_the_field_at_every_mip_level(blob_20k: MeshAsset) -> None:
    """Seams must not darken or bleed at lower mip levels: the gutters hold the island's colours."""
    uv_mesh = unwrap(blob_20k, 256)
    textured = bake_texture(uv_mesh, gradient)
    assert textured.texture.shape == (256, 256, 3) and textured.texture.dtype == np.uint8
    expected = gradient(torch.from_numpy(uv_mesh.vertices)).numpy()
    pyramid = mip_pyramid(textured.texture / 255.0)
    # Black gutters give errors of 0.24 / 0.39 at levels 1 / 2; from level 2 on, a 4-texel gutter
    # lets the neighbouring island itself into the average, a little.
    for level, tolerance in ((0, 0.01), (1, 0.01), (2, 0.1)):
        error = np.abs(sample_bilinear(pyramid[level], uv_mesh.uvs) - expected)
        assert error.max() < tolerance, level
        assert error.mean() < 0.002, level


def test_colour_function_shape_is_checked(blob_20k: MeshAsset) -> None:
    uv_mesh = UVMesh(blob_20k.vertices[:3], np.array([[0, 1, 2]]), UV_TRIANGLE, SIZE)
    with pytest.raises(ValueError, match="color_fn"):
        bake_texture(uv_mesh, lambda points: points[:, :2])


@pytest.mark.gpu
def test_cuda_bake_matches_cpu(blob_20k: MeshAsset) -> None:
    uv_mesh = unwrap(blob_20k, 1024)
    cpu = bake_texture(uv_mesh, checker, "cpu").texture.astype(int)
    cuda = bake_texture(uv_mesh, checker, "cuda").texture.astype(int)
    assert np.abs(cpu - cuda).max() <= 1
