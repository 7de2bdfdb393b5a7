"""Geometric measures: exact point-triangle distances, area sampling and the Chamfer distance."""

import numpy as np
import pytest
import trimesh

from gen3d.mesh.metrics import (
    chamfer_distance,
    point_triangle_distance,
    sample_surface,
    signed_volumes,
)

TRIANGLE = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    ("point", "distance"),
    [
        ((0.2, 0.2, 0.5), 0.5),  # above the interior: distance to the plane
        ((0.2, 0.2, -0.3), 0.3),  # below it
        ((-1.0, 0.5, 0.0), 1.0),  # beside an edge, in the plane
        ((2.0, 0.0, 0.0), 1.0),  # beyond a corner
        ((1.0, 1.0, 0.0), np.sqrt(0.5)),  # beyond the hypotenuse
        ((-3.0, -4.0, 12.0), 13.0),  # nearest to the origin corner
    ],
)
def test_point_triangle_distance(point: tuple[float, float, float], distance: float) -> None:
    assert point_triangle_distance(np.array(point), TRIANGLE) == pytest.approx(distance)


def test_samples_are_uniform_over_area() -> None:
    # Two triangles, one with three times the area of the other.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 1, 0]], float)
    points = sample_surface(vertices, np.array([[0, 1, 2], [3, 4, 5]]), 40_000)
    assert (points[:, 0] >= 10).mean() == pytest.approx(0.75, abs=0.01)


def test_chamfer_between_concentric_spheres_is_their_gap() -> None:
    inner = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    outer = trimesh.creation.icosphere(subdivisions=5, radius=1.02)
    gap = chamfer_distance((inner.vertices, inner.faces), (outer.vertices, outer.faces), samples=20_000)
    assert gap == pytest.approx(0.02, rel=0.05)
    assert chamfer_distance((inner.vertices, inner.faces), (inner.vertices, inner.faces), samples=5_000) < 1e-9


def test_signed_volume_of_a_cube() -> None:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    assert signed_volumes(box.vertices, box.faces).sum() == pytest.approx(6.0)
    assert signed_volumes(box.vertices, box.faces[:, ::-1]).sum() == pytest.approx(-6.0)
