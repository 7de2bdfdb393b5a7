"""Vectorised marching tetrahedra in torch (CUDA or CPU); no compiled extension needed.

Each cube is split into the six Freudenthal (Kuhn) tetrahedra that share the diagonal
v000-v111. The split is the same in every cube, so neighbouring cubes agree on their shared
faces and the surface is watertight. Only cubes whose corners straddle the level are visited;
vertices are keyed by global edge id (lower grid vertex x 8 + direction bits) and deduplicated
with ``torch.unique``. Triangle winding comes from tables oriented so that normals point from
the inside (value above level) to the outside.
"""

import itertools
from dataclasses import dataclass

import torch

#: Cube corner c = 4 * dx + 2 * dy + dz.
_CORNERS = torch.tensor([[c >> 2 & 1, c >> 1 & 1, c & 1] for c in range(8)])
#: Tetrahedron edges as pairs of its vertex indices (vertices ordered along the Kuhn path).
_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _kuhn_tetrahedra() -> torch.Tensor:
    """(6, 4) cube-corner indices: the path 000 -> +e_a -> +e_b -> 111 for each axis order (a, b, c)."""
    tets = []
    for order in itertools.permutations(range(3)):
        corner, path = [0, 0, 0], [0]
        for axis in order:
            corner[axis] = 1
            path.append(4 * corner[0] + 2 * corner[1] + corner[2])
        tets.append(path)
    return torch.tensor(tets)


def _oriented(tri: list[int], tet_points: torch.Tensor, inside: list[int]) -> list[int]:
    """Wind a triangle of tet edges so its normal points away from the inside vertices.

    Orientation is fixed on the edge-midpoint surface, which separates the inside and outside
    vertices by a plane; interpolated vertices keep the same combinatorial orientation.
    """
    mids = torch.stack([(tet_points[_TET_EDGES[e][0]] + tet_points[_TET_EDGES[e][1]]) / 2 for e in tri])
    normal = torch.linalg.cross(mids[1] - mids[0], mids[2] - mids[0])
    outward = mids.mean(0) - tet_points[inside].mean(0)
    return tri if float(normal @ outward) > 0 else [tri[0], tri[2], tri[1]]


def _case_table(tets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles per (tet, 4-bit inside code): (6, 16, 2, 3) local edge ids and (6, 16) counts."""
    edge_of = {pair: e for e, pair in enumerate(_TET_EDGES)}
    edge = lambda a, b: edge_of[(min(a, b), max(a, b))]  # noqa: E731
    table = torch.zeros(6, 16, 2, 3, dtype=torch.int64)
    counts = torch.zeros(6, 16, dtype=torch.int64)
    for t in range(6):
        points = _CORNERS[tets[t]].double()
        for code in range(1, 15):
            inside = [v for v in range(4) if code >> v & 1]
            outside = [v for v in range(4) if not code >> v & 1]
            if len(inside) == 2:
                (a, b), (c, d) = inside, outside
                tris = [[edge(a, c), edge(a, d), edge(b, d)], [edge(a, c), edge(b, d), edge(b, c)]]
            else:
                lone = inside[0] if len(inside) == 1 else outside[0]
                tris = [[edge(lone, v) for v in range(4) if v != lone]]
            for slot, tri in enumerate(tris):
                table[t, code, slot] = torch.tensor(_oriented(tri, points, inside))
            counts[t, code] = len(tris)
    return table, counts


_TETS = _kuhn_tetrahedra()
_TABLE, _COUNTS = _case_table(_TETS)
#: Per (tet type, local edge): cube corner of the edge's lower end, and its direction bits.
_EDGE_LOWER = _TETS[:, [a for a, _ in _TET_EDGES]]
_EDGE_DIR = _EDGE_LOWER ^ _TETS[:, [b for _, b in _TET_EDGES]]


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


def marching_tetrahedra(values: torch.Tensor, level: float = 0.0) -> Isosurface:
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
    flat = values.reshape(-1)
    inside = values > level
    strides = torch.tensor([values.shape[1] * values.shape[2], values.shape[2], 1], device=device)
    corner_offsets = (_CORNERS.to(device) * strides).sum(1)  # (8,) linear offsets of cube corners

    # 1. Visit only cubes that straddle the level; each gives 6 tets of 4 global vertex ids.
    cubes = _straddling_cubes(inside)
    base = (cubes * strides).sum(1)
    tet_vertices = base[:, None, None] + corner_offsets[_TETS.to(device)]  # (M, 6, 4)
    codes = (inside.reshape(-1)[tet_vertices].long() << torch.arange(4, device=device)).sum(-1)  # (M, 6)

    # 2. Look up triangles per (tet type, code); keep their cube and tet type.
    tet_type = torch.arange(6, device=device).expand_as(codes)
    counts = _COUNTS.to(device)[tet_type, codes]
    tri_edges, tri_cubes, tri_types = [], [], []
    for slot in range(2):
        cube_idx, tet_idx = torch.nonzero(counts > slot, as_tuple=True)
        tri_edges.append(_TABLE.to(device)[tet_idx, codes[cube_idx, tet_idx], slot])  # (T, 3)
        tri_cubes.append(cube_idx)
        tri_types.append(tet_idx)
    edges, tri_cube, tri_type = torch.cat(tri_edges), torch.cat(tri_cubes), torch.cat(tri_types)
    if edges.numel() == 0:
        return Isosurface(torch.zeros(0, 3, device=device), torch.zeros(0, 3, dtype=torch.int64, device=device))

    # 3. Global edge id = lower grid vertex * 8 + direction bits (Kuhn edges go up componentwise).
    lower_corner = _EDGE_LOWER.to(device)[tri_type[:, None], edges]  # (T, 3)
    direction = _EDGE_DIR.to(device)[tri_type[:, None], edges]
    keys = (base[tri_cube, None] + corner_offsets[lower_corner]) * 8 + direction
    unique_ids, faces = torch.unique(keys, return_inverse=True)

    # 4. Vertices by linear interpolation along each unique edge.
    lo = unique_ids // 8
    hi = lo + corner_offsets[unique_ids % 8]
    v_lo, v_hi = flat[lo].float(), flat[hi].float()
    t = ((level - v_lo) / (v_hi - v_lo)).unsqueeze(1)
    p_lo, p_hi = _unravel(lo, strides), _unravel(hi, strides)
    vertices = p_lo + t * (p_hi - p_lo)
    return Isosurface(vertices.float(), faces.reshape(-1, 3))


def _unravel(index: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Linear grid ids (N,) -> float (N, 3) grid coordinates."""
    return torch.stack([index // strides[0], index % strides[0] // strides[1], index % strides[1]], dim=1).float()
