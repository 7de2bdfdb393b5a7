"""UV unwrapping: seams split, UVs inside the atlas, no flipped or overlapping triangles, gutters kept."""

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from gen3d.mesh.bake import rasterize_uv
from gen3d.mesh.unwrap import unwrap
from gen3d.results import MeshAsset, UVMesh

SIZE, GUTTER = 512, 4


def uv_area2(uv_mesh: UVMesh) -> np.ndarray:
    """Twice the signed UV area (F,) of each face, in texels²."""
    tri = uv_mesh.uvs[uv_mesh.faces].astype(np.float64) * uv_mesh.texture_size
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def islands(uv_mesh: UVMesh) -> np.ndarray:
    """Island id (F,) of each face: faces sharing a (split) vertex."""
    f = uv_mesh.faces
    n = len(uv_mesh.vertices)
    graph = sparse.coo_matrix((np.ones(f.size), (f.reshape(-1), np.roll(f, 1, axis=1).reshape(-1))), shape=(n, n))
    return connected_components(graph, directed=False)[1][f[:, 0]]


@pytest.fixture(scope="module", params=["blob_20k", "mug_10k"])
def unwrapped(request: pytest.FixtureRequest) -> tuple[MeshAsset, UVMesh]:
    mesh = request.getfixturevalue(request.param)
    return mesh, unwrap(mesh, SIZE, GUTTER)


def test_faces_keep_their_corners_and_seams_are_split(unwrapped: tuple[MeshAsset, UVMesh]) -> None:
    mesh, uv_mesh = unwrapped
    assert uv_mesh.texture_size == SIZE and len(uv_mesh.faces) == len(mesh.faces)
    np.testing.assert_array_equal(uv_mesh.vertices[uv_mesh.faces], mesh.vertices[mesh.faces])
    assert len(mesh.vertices) < len(uv_mesh.vertices) < 1.2 * len(mesh.vertices)
    assert uv_mesh.uvs.dtype == np.float32 and uv_mesh.faces.dtype == np.int64


def test_uvs_stay_inside_the_atlas_margin(unwrapped: tuple[MeshAsset, UVMesh]) -> None:
    texels = unwrapped[1].uvs * SIZE
    assert texels.min() >= GUTTER / 2 - 1e-3 and texels.max() <= SIZE - GUTTER / 2 + 1e-3


def test_no_triangle_flips_within_an_island(unwrapped: tuple[MeshAsset, UVMesh]) -> None:
    uv_mesh = unwrapped[1]
    area2, island = uv_area2(uv_mesh), islands(uv_mesh)
    positive = np.bincount(island, weights=(area2 > 0).astype(float))
    negative = np.bincount(island, weights=(area2 < 0).astype(float))
    assert (np.minimum(positive, negative) == 0).all()


def test_islands_do_not_overlap(unwrapped: tuple[MeshAsset, UVMesh]) -> None:
    """Texel centres inside some triangle number the UV area: overlapping triangles would count once."""
    uv_mesh = unwrapped[1]
    covered = rasterize_uv(torch.from_numpy(uv_mesh.uvs), torch.from_numpy(uv_mesh.faces), SIZE, margin=0.0)
    area = 0.5 * np.abs(uv_area2(uv_mesh)).sum()
    assert len(covered.texel) == pytest.approx(area, rel=0.01)
    assert area > 0.4 * SIZE * SIZE  # the atlas is used, not just a corner of it


def test_islands_keep_the_gutter_apart(unwrapped: tuple[MeshAsset, UVMesh]) -> None:
    uv_mesh = unwrapped[1]
    island = islands(uv_mesh)
    corners = uv_mesh.uvs[uv_mesh.faces].reshape(-1, 2) * SIZE
    corner_island = np.repeat(island, 3)
    count = island.max() + 1
    lo = np.stack([np.full(count, np.inf)] * 2, 1)
    hi = -lo
    np.minimum.at(lo, corner_island, corners)
    np.maximum.at(hi, corner_island, corners)
    # Boxes grown by just under half a gutter must not meet.
    lo, hi = lo - GUTTER / 2 + 0.01, hi + GUTTER / 2 - 0.01
    inter = np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None])
    touching = (inter > 0).all(axis=2)
    np.fill_diagonal(touching, False)
    assert not touching.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_unwrap_equals_the_cpu_one(blob_20k: MeshAsset) -> None:
    """The service unwraps on the GPU; tests and the tiny preset on the CPU: one atlas either way."""
    cpu, cuda = unwrap(blob_20k, SIZE, GUTTER, "cpu"), unwrap(blob_20k, SIZE, GUTTER, "cuda")
    np.testing.assert_array_equal(cuda.faces, cpu.faces)
    np.testing.assert_allclose(cuda.uvs, cpu.uvs, atol=1e-6)


def test_bad_arguments_name_the_field(blob_20k: MeshAsset) -> None:
    with pytest.raises(ValueError, match="texture_size"):
        unwrap(blob_20k, 8)
    with pytest.raises(ValueError, match="gutter"):
        unwrap(blob_20k, 512, gutter=1)
