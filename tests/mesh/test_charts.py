"""Chart segmentation: edge adjacency, box-side charts, every face facing its chart's axis."""

import numpy as np
import pytest
import trimesh

from gen3d.mesh.charts import AXES, MIN_FACING, face_adjacency, face_normals, segment_charts
from gen3d.results import MeshAsset


def test_face_adjacency_of_a_tetrahedron() -> None:
    faces = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])
    pairs = face_adjacency(faces)
    assert len(pairs) == 6
    np.testing.assert_array_equal(np.bincount(pairs.reshape(-1)), [3, 3, 3, 3])


def test_a_cube_gives_one_chart_per_side() -> None:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    charts = segment_charts(box.vertices, box.faces)
    assert charts.count == 6
    normals = face_normals(box.vertices, box.faces)
    axes = AXES[charts.axis[charts.face_chart]]
    np.testing.assert_allclose(normals / np.linalg.norm(normals, axis=1, keepdims=True), axes, atol=1e-9)


@pytest.mark.parametrize("name", ["blob_20k", "mug_10k"])
def test_every_face_faces_its_chart_axis(name: str, request: pytest.FixtureRequest) -> None:
    mesh: MeshAsset = request.getfixturevalue(name)
    charts = segment_charts(mesh.vertices, mesh.faces)
    normals = face_normals(mesh.vertices, mesh.faces)
    unit = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    facing = np.einsum("fd,fd->f", unit, AXES[charts.axis[charts.face_chart]])
    assert facing.min() > MIN_FACING
    # Smoothing and dissolving keep the count small: a few dozen charts, not thousands of specks.
    assert 6 <= charts.count <= 80
    assert np.bincount(charts.face_chart).min() >= 1
