"""Axis conventions: model frame (z up, front +x) -> "+y" (front +z) or "-y" file frames."""

import numpy as np
import pytest

from gen3d.orientation import (
    file_rotation,
    from_y_up,
    matrix_to_quaternion,
    orient_gaussians,
    orient_mesh,
    quaternion_to_matrix,
    to_y_up,
)
from gen3d.results import Gaussians, MeshAsset

# Model-frame landmarks: the top of the object (+z) and its front (+x, facing the input camera).
TOP, FRONT = np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]])


def test_to_y_up_maps_top_to_plus_y_and_front_to_plus_z() -> None:
    np.testing.assert_array_equal(to_y_up(TOP), [[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(to_y_up(FRONT), [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(to_y_up(np.array([[1.0, 2.0, 3.0]])), [[2.0, 3.0, 1.0]])
    points = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(from_y_up(to_y_up(points)), points)


@pytest.mark.parametrize(("up", "top", "front"), [("+y", [0, 1, 0], [0, 0, 1]), ("-y", [0, -1, 0], [0, 0, -1])])
def test_file_rotations_are_proper_and_place_top_and_front(up: str, top: list, front: list) -> None:
    rotation = file_rotation(up)
    assert np.isclose(np.linalg.det(rotation), 1.0)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3))
    np.testing.assert_allclose(rotation @ TOP[0], top)
    np.testing.assert_allclose(rotation @ FRONT[0], front)


def test_unknown_up_axis_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="up"):
        file_rotation("z")  # type: ignore[arg-type]


def test_quaternion_matrix_round_trip() -> None:
    q = np.random.default_rng(1).normal(size=(20, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    back = np.stack([matrix_to_quaternion(m) for m in quaternion_to_matrix(q)])
    np.testing.assert_allclose(np.abs(np.sum(back * q, axis=1)), 1.0, atol=1e-9)  # q and -q are the same
    with pytest.raises(ValueError, match="rotation"):
        matrix_to_quaternion(np.diag([1.0, 1.0, -1.0]))


@pytest.mark.parametrize("up", ["+y", "-y"])
def test_gaussian_orientations_rotate_with_the_centres(up: str) -> None:
    rng = np.random.default_rng(2)
    q = rng.normal(size=(50, 4)).astype(np.float32)
    g = Gaussians(
        means=rng.normal(size=(50, 3)).astype(np.float32),
        f_dc=np.zeros((50, 3), np.float32),
        opacity=np.zeros(50, np.float32),
        log_scales=np.zeros((50, 3), np.float32),
        rotations=q,
    )
    out = orient_gaussians(g, up)
    rotation = file_rotation(up)
    np.testing.assert_allclose(out.means, g.means @ rotation.T, atol=1e-6)
    # Each gaussian's frame (its local axes in world coordinates) turns with the object.
    np.testing.assert_allclose(quaternion_to_matrix(out.rotations.astype(np.float64)),
                               rotation @ quaternion_to_matrix(q.astype(np.float64)), atol=1e-5)  # fmt: skip


def test_mesh_normals_turn_with_the_rotation_and_winding_survives() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)  # normal +z (top)
    mesh = MeshAsset(vertices, np.array([[0, 1, 2]]), np.zeros((3, 3), np.uint8))
    for up, expected in (("+y", [0, 1, 0]), ("-y", [0, -1, 0])):
        v = orient_mesh(mesh, up).vertices
        normal = np.cross(v[1] - v[0], v[2] - v[0])
        np.testing.assert_allclose(normal, expected, atol=1e-6)
