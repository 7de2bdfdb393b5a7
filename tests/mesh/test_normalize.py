"""File frame: +Y up after gen3d.orientation's rotation, unit box on request, smooth unit normals."""

import numpy as np
import pytest
import trimesh

from gen3d.errors import StageOutputError
from gen3d.mesh.metrics import signed_volumes
from gen3d.mesh.normalize import file_vertices, to_file_frame, vertex_normals
from gen3d.orientation import to_y_up
from gen3d.results import MeshAsset, TexturedMesh


@pytest.fixture(scope="module")
def tall_cone() -> MeshAsset:
    """Model frame: apex up (+z) at 0.9, off-centre, so centring and scaling both show."""
    cone = trimesh.creation.cone(radius=0.3, height=1.2, sections=24)
    cone.apply_translation((0.2, -0.1, -0.3))
    return MeshAsset(cone.vertices.astype(np.float32), cone.faces.astype(np.int64),
                     np.zeros((len(cone.vertices), 3), np.uint8))  # fmt: skip


def test_normalised_mesh_fills_the_unit_box_upright(tall_cone: MeshAsset) -> None:
    placed = to_file_frame(tall_cone)
    lo, hi = placed.vertices.min(axis=0), placed.vertices.max(axis=0)
    np.testing.assert_allclose(0.5 * (lo + hi), 0.0, atol=1e-6)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(placed.vertices).max() <= 0.5 + 1e-6
    # The apex (model +z) is the top along +Y, and winding still points outward.
    apex = np.argmax(tall_cone.vertices[:, 2])
    assert placed.vertices[apex, 1] == pytest.approx(0.5, abs=1e-6)
    assert signed_volumes(placed.vertices, placed.faces).sum() > 0
    np.testing.assert_array_equal(placed.faces, tall_cone.faces)


def test_without_normalising_the_scale_is_tripo_srs(tall_cone: MeshAsset) -> None:
    placed = to_file_frame(tall_cone, normalize=False)
    np.testing.assert_allclose(placed.vertices, to_y_up(tall_cone.vertices), atol=1e-6)


def test_textured_meshes_keep_uvs_and_texture(tall_cone: MeshAsset) -> None:
    uvs = np.random.default_rng(0).random((len(tall_cone.vertices), 2)).astype(np.float32)
    texture = np.zeros((16, 16, 3), np.uint8)
    textured = TexturedMesh(tall_cone.vertices, tall_cone.faces, uvs, texture)
    placed = to_file_frame(textured)
    assert isinstance(placed, TexturedMesh) and placed.uvs is uvs and placed.texture is texture
    np.testing.assert_allclose(placed.vertices, to_file_frame(tall_cone).vertices)


def test_coincident_vertices_cannot_be_normalised() -> None:
    with pytest.raises(StageOutputError, match="normalise"):
        file_vertices(np.ones((3, 3), np.float32))


def test_vertex_normals_are_unit_radial_and_shared_across_seams() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    # Split every vertex of face 0 off into a copy, as a UV seam would.
    vertices = np.concatenate([sphere.vertices, sphere.vertices[sphere.faces[0]]])
    faces = sphere.faces.copy()
    faces[0] = len(sphere.vertices) + np.arange(3)
    normals = vertex_normals(vertices.astype(np.float32), faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert (np.einsum("vd,vd->v", normals, vertices / np.linalg.norm(vertices, axis=1, keepdims=True)) > 0.99).all()
    np.testing.assert_allclose(normals[len(sphere.vertices) :], normals[sphere.faces[0]], atol=1e-6)
