"""Marching cubes: the generated case table, a planted sphere and random fields."""

from collections import Counter

import numpy as np
import pytest
import torch
import trimesh

from gen3d.mesh.isosurface import _CUBE_EDGES, _FACES, cube_case_table, marching_cubes

CORNER_BITS = [(c >> 2 & 1, c >> 1 & 1, c & 1) for c in range(8)]


def _crossed(code: int) -> set[int]:
    return {e for e, (a, b) in enumerate(_CUBE_EDGES) if (code >> a & 1) != (code >> b & 1)}


def _boundary(code: int) -> Counter:
    """Directed triangle edges of a case whose reverse is not also drawn: the loops on the cube faces."""
    triangles, counts = cube_case_table()
    directed = Counter()
    for a, b, c in triangles[code, : counts[code]].tolist():
        directed.update([(a, b), (b, c), (c, a)])
    return Counter({edge: n for edge, n in directed.items() if (edge[1], edge[0]) not in directed})


def _on_face(edge: int, face: int) -> bool:
    axis, side = _FACES[face]
    return all(CORNER_BITS[c][axis] == side for c in _CUBE_EDGES[edge])


def _face_of(a: int, b: int) -> int | None:
    """The cube face containing both cube edges, if any."""
    return next((f for f in range(6) if _on_face(a, f) and _on_face(b, f)), None)


def _mesh(values: torch.Tensor, level: float) -> trimesh.Trimesh:
    surface = marching_cubes(values, level)
    return trimesh.Trimesh(surface.vertices.numpy(), surface.faces.numpy(), process=False)


def test_case_table_uses_every_crossed_edge_and_no_other() -> None:
    triangles, counts = cube_case_table()
    assert counts[0] == counts[255] == 0
    for code in range(256):
        used = set(triangles[code, : counts[code]].flatten().tolist())
        assert used == _crossed(code), code


def test_case_table_loops_are_closed_and_lie_on_cube_faces() -> None:
    for code in range(1, 255):
        boundary = _boundary(code)
        assert set(boundary.values()) == {1}, code  # no edge drawn twice the same way
        assert all(_face_of(a, b) is not None for a, b in boundary), code
        starts, ends = Counter(a for a, _ in boundary), Counter(b for _, b in boundary)
        assert starts == ends == Counter(_crossed(code)), code  # each crossing is on exactly one loop


def test_face_segments_depend_only_on_the_face_signs() -> None:
    """Two cubes sharing a face (side 1 of one, side 0 of the other) must draw the same segments there."""
    seen: dict[tuple, set] = {}
    for code in range(1, 255):
        for face, (axis, side) in enumerate(_FACES):
            in_plane = lambda c: tuple(x for i, x in enumerate(CORNER_BITS[c]) if i != axis)  # noqa: E731
            signs = tuple(code >> c & 1 for c in range(8) if CORNER_BITS[c][axis] == side)
            segments = {
                frozenset(frozenset(in_plane(c) for c in _CUBE_EDGES[e]) for e in edge)
                for edge in _boundary(code)
                if _face_of(*edge) == face
            }
            assert seen.setdefault((axis, signs), segments) == segments, (code, face)


def test_complement_case_is_the_same_surface_reversed() -> None:
    for code in range(1, 255):
        per_face = Counter(f for e in _crossed(code) for f in range(6) if _on_face(e, f))
        if 4 not in per_face.values():  # no ambiguous face
            reversed_loops = Counter({(b, a): n for (a, b), n in _boundary(code).items()})
            assert _boundary(255 - code) == reversed_loops, code


@pytest.mark.parametrize("seed", range(3))
def test_random_field_gives_a_closed_outward_mesh(seed: int) -> None:
    noise = torch.rand(24, 24, 24, generator=torch.Generator().manual_seed(seed))
    values = torch.nn.functional.pad(noise, (1, 1, 1, 1, 1, 1), value=0.0)  # keep the surface off the border
    tm = _mesh(values, 0.5)
    edges = Counter(map(tuple, np.sort(tm.edges, axis=1).tolist()))
    assert set(edges.values()) == {2}
    assert tm.is_winding_consistent and tm.volume > 0


def test_empty_and_bad_grids() -> None:
    empty = marching_cubes(torch.zeros(4, 4, 4), 0.5)
    assert empty.vertices.shape == (0, 3) and empty.faces.shape == (0, 3)
    with pytest.raises(ValueError, match="values"):
        marching_cubes(torch.zeros(4, 4), 0.5)
