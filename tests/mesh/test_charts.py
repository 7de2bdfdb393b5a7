"""Chart segmentation: edge adjacency, box-side charts, every face facing its chart's axis."""

import numpy as np
import pytest
import torch
import trimesh
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from gen3d.mesh.charts import (
    AXES,
    MIN_FACING,
    connected_labels,
    face_adjacency,
    face_normals,
    segment_charts,
)
from gen3d.results import MeshAsset


def tensors(mesh: MeshAsset | trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(mesh.vertices)), torch.as_tensor(np.asarray(mesh.faces, dtype=np.int64))


def test_face_adjacency_of_a_tetrahedron() -> None:
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])
    pairs = face_adjacency(faces)
    assert len(pairs) == 6
    assert torch.bincount(pairs.reshape(-1)).tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize("seed", range(4))
def test_connected_labels_match_scipy(seed: int) -> None:
    """Random sparse graphs (many components, long chains, self-loops): the same ids as scipy."""
    rng = np.random.default_rng(seed)
    count = 2000
    chain = np.stack([np.arange(count - 1), np.arange(1, count)], 1)[rng.random(count - 1) < 0.9]
    extra = rng.integers(0, count, (300, 2))
    pairs = rng.permutation(np.concatenate([chain, extra]))
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    expected_count, expected = connected_components(graph, directed=False)
    found_count, found = connected_labels(torch.from_numpy(pairs), count)
    assert found_count == expected_count > 1
    np.testing.assert_array_equal(found.numpy(), expected)


def test_a_cube_gives_one_chart_per_side() -> None:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    vertices, faces = tensors(box)
    charts = segment_charts(vertices, faces)
    assert charts.count == 6
    normals = face_normals(vertices, faces)
    axes = AXES[charts.axis[charts.face_chart]]
    torch.testing.assert_close(normals / normals.norm(dim=1, keepdim=True), axes, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["blob_20k", "mug_10k"])
def test_every_face_faces_its_chart_axis(name: str, request: pytest.FixtureRequest) -> None:
    mesh: MeshAsset = request.getfixturevalue(name)
    vertices, faces = tensors(mesh)
    charts = segment_charts(vertices, faces)
    normals = face_normals(vertices, faces)
    unit = normals / normals.norm(dim=1, keepdim=True)
    facing = (unit * AXES[charts.axis[charts.face_chart]]).sum(dim=1)
    assert facing.min() > MIN_FACING
    # Smoothing and dissolving keep the count small: a few dozen charts, not thousands of specks.
    assert 6 <= charts.count <= 80
    assert torch.bincount(charts.face_chart).min() >= 1
