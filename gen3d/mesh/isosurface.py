"""Vectorised marching cubes in torch (CUDA or CPU); no compiled extension and no copied table.

The case table is generated at first use: on each cube face the level crosses 0, 2 or 4 edges; the
crossings are joined into segments by a rule that reads only that face's corner signs (a face with
two diagonal inside corners cuts each inside corner off on its own), so the two cubes sharing a
face agree and the surface is watertight. The segments chain into loops, which are triangulated.
Only cubes whose corners straddle the level are visited; vertices are keyed by global edge id
(lower grid vertex x 8 + direction bits), deduplicated with ``torch.unique`` and placed by linear
interpolation.
"""

import functools
from dataclasses import dataclass

import torch

#: Cube corner c = 4 * dx + 2 * dy + dz.
_CORNERS = torch.tensor([[c >> 2 & 1, c >> 1 & 1, c & 1] for c in range(8)])
#: Cube edges as (lower corner, upper corner); the upper corner differs in one axis bit.
_CUBE_EDGES = tuple((c, c | bit) for bit in (4, 2, 1) for c in range(8) if not c & bit)
#: Cube faces as (axis, side); corners are listed cyclically around each face.
_FACES = tuple((axis, side) for axis in range(3) for side in (0, 1))


def _face_cycle(axis: int, side: int) -> list[int]:
    """The 4 corners of a cube face in cyclic order."""
    u, v = (a for a in range(3) if a != axis)
    cycle = []
    for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
        xyz = [0, 0, 0]
        xyz[axis], xyz[u], xyz[v] = side, du, dv
        cycle.append(4 * xyz[0] + 2 * xyz[1] + xyz[2])
    return cycle


def _edge_faces() -> list[set[int]]:
    """For each cube edge, the indices of the two cube faces that contain it."""
    corners = _CORNERS.tolist()
    return [
        {f for f, (axis, side) in enumerate(_FACES) if corners[a][axis] == side and corners[b][axis] == side}
        for a, b in _CUBE_EDGES
    ]


def _face_segments(code: int, axis: int, side: int) -> list[tuple[int, int]]:
    """Directed segments (edge id, edge id) on one face for the inside-corner bitmask ``code``.

    A face with diagonal inside corners always cuts each inside corner off on its own: the rule reads
    only this face's signs, so the two cubes sharing the face draw the same segments. Segments run
    with the inside on their right seen from outside the cube, so that they chain into loops whose
    triangles, taken in loop order, face outward.
    """
    edge_of = {frozenset(pair): e for e, pair in enumerate(_CUBE_EDGES)}
    cycle = _face_cycle(axis, side)
    inside = [bool(code >> c & 1) for c in cycle]
    crossing = [i for i in range(4) if inside[i] != inside[(i + 1) % 4]]  # face edge i joins cycle[i], cycle[i+1]
    if not crossing:
        return []
    if len(crossing) == 2:
        pairs = [(crossing, [cycle[i] for i in range(4) if inside[i]])]
    else:  # ambiguous face: one segment around each inside corner
        pairs = [([(i - 1) % 4, i], [cycle[i]]) for i in range(4) if inside[i]]
    normal = torch.zeros(3, dtype=torch.float64)
    normal[axis] = 2 * side - 1
    points = _CORNERS.double()
    segments = []
    for face_edges, inside_corners in pairs:
        p, q = (points[[cycle[i], cycle[(i + 1) % 4]]].mean(0) for i in face_edges)
        ids = [edge_of[frozenset((cycle[i], cycle[(i + 1) % 4]))] for i in face_edges]
        turn = torch.linalg.cross(q - p, points[inside_corners].mean(0) - p) @ normal
        segments.append((ids[0], ids[1]) if turn < 0 else (ids[1], ids[0]))
    return segments


def _loops(code: int) -> list[list[int]]:
    """Closed, consistently directed loops of cube edge ids where the surface crosses the cube's faces."""
    successor: dict[int, int] = {}
    for axis, side in _FACES:
        for start, end in _face_segments(code, axis, side):
            assert start not in successor, f"case {code}: edge {start} starts two segments"
            successor[start] = end
    assert sorted(successor) == sorted(successor.values()), f"case {code}: open loop"
    loops = []
    while successor:
        loop = [min(successor)]
        while successor[loop[-1]] != loop[0]:
            loop.append(successor.pop(loop[-1]))
        successor.pop(loop[-1])
        loops.append(loop)
    return loops


def _triangulate(loop: list[int], edge_faces: list[set[int]]) -> list[tuple[int, int, int]]:
    """Triangles (in loop order) over a loop, shortest total diagonal, never a diagonal on a cube face.

    A diagonal between two points of one face would be an edge that the neighbouring cube may draw
    too (4 faces on one edge); all other diagonals are private to the cube, which keeps the mesh
    watertight.
    """
    n = len(loop)
    mids = torch.stack([_CORNERS[list(_CUBE_EDGES[e])].double().mean(0) for e in loop])

    def weight(i: int, j: int) -> float:
        if j - i in (1, n - 1):
            return 0.0  # a loop segment
        if edge_faces[loop[i]] & edge_faces[loop[j]]:
            return float("inf")
        return float((mids[i] - mids[j]).norm())

    best: dict[tuple[int, int], tuple[float, list[tuple[int, int, int]]]] = {}
    for span in range(2, n):
        for i in range(n - span):
            j = i + span
            options = [
                (weight(i, m) + weight(m, j) + best.get((i, m), (0.0, []))[0] + best.get((m, j), (0.0, []))[0], m)
                for m in range(i + 1, j)
            ]
            cost, m = min(options)
            tris = best.get((i, m), (0.0, []))[1] + [(i, m, j)] + best.get((m, j), (0.0, []))[1]
            best[i, j] = (cost, tris)
    cost, tris = best[0, n - 1]
    assert cost < float("inf"), f"loop {loop}: no triangulation avoids face diagonals"
    return [(loop[a], loop[b], loop[c]) for a, b, c in tris]


@functools.cache
def cube_case_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Marching-cubes triangles per inside-corner bitmask (bit c set: corner c is inside).

    Built at first use from the face rule in ``_face_segments``; no table is copied in.

    Returns:
        ``triangles`` (256, T, 3) int64 cube edge ids (index ``_CUBE_EDGES``), wound so normals point
        from inside to outside, padded with -1; ``counts`` (256,) int64 triangles per case.
    """
    edge_faces = _edge_faces()
    cases = [[tri for loop in _loops(code) for tri in _triangulate(loop, edge_faces)] for code in range(256)]
    width = max(len(tris) for tris in cases)
    triangles = torch.full((256, width, 3), -1, dtype=torch.int64)
    for code, tris in enumerate(cases):
        if tris:
            triangles[code, : len(tris)] = torch.tensor(tris)
    return triangles, torch.tensor([len(tris) for tris in cases])


@dataclass(frozen=True)
class Isosurface:
    """A triangle mesh in grid-index units.

    Attributes:
        vertices: (V, 3) float32, in grid indices (0 .. R-1 per axis).
        faces: (F, 3) int64, counter-clockwise seen from outside.
    """

    vertices: torch.Tensor
    faces: torch.Tensor


def _straddling_cubes(inside: torch.Tensor) -> torch.Tensor:
    """(M, 3) int64 lower-corner indices of the cubes whose 8 corners are not all on one side."""
    occ = inside.to(torch.uint8)
    r0, r1, r2 = (side - 1 for side in occ.shape)
    count = sum(occ[dx : dx + r0, dy : dy + r1, dz : dz + r2] for dx, dy, dz in _CORNERS.tolist())
    return torch.nonzero((count > 0) & (count < 8))


def _interpolate(
    values: torch.Tensor, level: float, keys: torch.Tensor, strides: torch.Tensor, corner_offsets: torch.Tensor
) -> Isosurface:
    """Faces from (T, 3) global edge keys; one vertex per unique edge, linearly interpolated."""
    unique_ids, faces = torch.unique(keys, return_inverse=True)
    lo = unique_ids // 8
    hi = lo + corner_offsets[unique_ids % 8]
    flat = values.reshape(-1)
    v_lo, v_hi = flat[lo].float(), flat[hi].float()
    t = ((level - v_lo) / (v_hi - v_lo)).unsqueeze(1)
    p_lo, p_hi = _unravel(lo, strides), _unravel(hi, strides)
    return Isosurface((p_lo + t * (p_hi - p_lo)).float(), faces.reshape(-1, 3))


def _unravel(index: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Linear grid ids (N,) -> float (N, 3) grid coordinates."""
    return torch.stack([index // strides[0], index % strides[0] // strides[1], index % strides[1]], dim=1).float()


def marching_cubes(values: torch.Tensor, level: float = 0.0) -> Isosurface:
    """Extract the surface ``values == level``; ``values > level`` is inside.

    Args:
        values: (R0, R1, R2) float scalar field on a regular grid, any device.
        level: iso value.

    Returns:
        The surface in grid-index coordinates, on the device of ``values``.
    """
    if values.dim() != 3 or min(values.shape) < 2:
        raise ValueError(f"values: expected a (R0, R1, R2) grid with every side >= 2, got {tuple(values.shape)}")
    device = values.device
    inside = values > level
    strides = torch.tensor([values.shape[1] * values.shape[2], values.shape[2], 1], device=device)
    corner_offsets = (_CORNERS.to(device) * strides).sum(1)  # (8,) linear offsets of cube corners
    table, counts = (t.to(device) for t in cube_case_table())

    # 1. Visit only cubes that straddle the level; an 8-bit code per cube picks its triangles.
    cubes = _straddling_cubes(inside)
    base = (cubes * strides).sum(1)
    corner_inside = inside.reshape(-1)[base[:, None] + corner_offsets].long()  # (M, 8)
    codes = (corner_inside << torch.arange(8, device=device)).sum(1)
    per_cube = counts[codes]
    tri_cube = torch.repeat_interleave(torch.arange(len(codes), device=device), per_cube)
    if tri_cube.numel() == 0:
        return Isosurface(torch.zeros(0, 3, device=device), torch.zeros(0, 3, dtype=torch.int64, device=device))
    first = torch.cumsum(per_cube, 0) - per_cube
    slot = torch.arange(len(tri_cube), device=device) - first[tri_cube]
    edges = table[codes[tri_cube], slot]  # (T, 3) cube edge ids

    # 2. Global edge id = lower grid vertex * 8 + direction bits, shared by the cubes around the edge.
    cube_edges = torch.tensor(_CUBE_EDGES, device=device)
    lower = cube_edges[edges, 0]
    direction = lower ^ cube_edges[edges, 1]
    keys = (base[tri_cube, None] + corner_offsets[lower]) * 8 + direction
    return _interpolate(values, level, keys, strides, corner_offsets)
