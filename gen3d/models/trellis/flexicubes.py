"""FlexiCubes isosurface extraction (Shen et al., SIGGRAPH 2023): the inference path TRELLIS uses.

FlexiCubes is Dual Marching Cubes with learned weights. Every cube the surface crosses emits one
dual vertex per surface patch inside it, placed at the ``beta``-weighted mean of the patch's edge
crossings, each crossing found by linear interpolation of ``alpha``-scaled sdf values. Every
crossed edge inside the grid then joins the dual vertices of its four cubes into a quad, split into
two triangles along the diagonal whose ``gamma`` product is larger.

Conventions, those of the tables TRELLIS's checkpoints were trained with:

- corner ``i`` of a cube sits at offset ``(i & 1, i >> 1 & 1, i >> 2 & 1)`` (x, y, z);
- a vertex is *inside* where its sdf is negative; faces wind so that normals point outside;
- the 12 edges are numbered and oriented as ``CUBE_EDGES``.

The case tables are generated from the rules they follow (``case_tables``), never typed in;
``tests/models/trellis/test_flexicubes.py`` checks them against the reference's ``tables.py``.
The inference path needs no QEF solve and no regulariser, so neither exists here.
"""

from dataclasses import dataclass
from functools import cache

import torch

#: Cube corner offsets [8, 3] (x, y, z), corner i at bits (x, y, z) = (i & 1, i >> 1 & 1, i >> 2 & 1).
CUBE_CORNERS = torch.tensor([[i & 1, i >> 1 & 1, i >> 2 & 1] for i in range(8)], dtype=torch.long)


def _corner(x: int, y: int, z: int) -> int:
    return x | y << 1 | z << 2


def _cube_edges() -> tuple[tuple[int, int], ...]:
    """The 12 edges as corner pairs, in the numbering and orientation of the case tables.

    First the loop (x, z) = (0,0) -> (1,0) -> (1,1) -> (0,1) on the face y = 0, then on y = 1 (each
    edge from its lower corner), then the four y-edges in the same loop order, from y = 1 down to 0.
    """
    loop = ((0, 0), (1, 0), (1, 1), (0, 1))
    edges = []
    for y in (0, 1):
        for (x0, z0), (x1, z1) in zip(loop, loop[1:] + loop[:1]):
            a, b = _corner(x0, y, z0), _corner(x1, y, z1)
            edges.append((min(a, b), max(a, b)))
    edges += [(_corner(x, 1, z), _corner(x, 0, z)) for x, z in loop]
    return tuple(edges)


#: Cube edges [12, 2] as (first, second) corner indices; an edge's orientation orders it globally.
CUBE_EDGES = torch.tensor(_cube_edges(), dtype=torch.long)
#: Triangle splits of a quad (q0, q1, q2, q3): along the diagonal q0-q2, or along q1-q3.
_SPLIT_02 = [0, 1, 2, 0, 2, 3]
_SPLIT_13 = [0, 1, 3, 3, 1, 2]


@dataclass(frozen=True)
class CaseTables:
    """Per corner configuration (case = sum of 2^i over inside corners i), 256 rows each.

    Attributes:
        edge_group: [256, 12] long, the dual vertex (0..3) that each crossed edge belongs to, or -1.
        num_groups: [256] long, dual vertices the case emits.
        checked: [256] bool, cases with one ambiguous face and more than four inside corners
            (FlexiCubes' C16/C19): if the cube across that face is checked too, both cubes take the
            complementary case (``255 - case``), which joins the patches the other way.
        neighbour: [256, 3] long, the step (one of +-x, +-y, +-z) to the cube across that face.
    """

    edge_group: torch.Tensor
    num_groups: torch.Tensor
    checked: torch.Tensor
    neighbour: torch.Tensor

    def to(self, device: torch.device) -> "CaseTables":
        tables = (self.edge_group, self.num_groups, self.checked, self.neighbour)
        return CaseTables(*(table.to(device) for table in tables))


def _cube_faces() -> list[tuple[int, int, list[int]]]:
    """(axis, side, edge ids) of the six faces."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            on_face = {i for i in range(8) if (i >> axis & 1) == side}
            edges = [e for e, (a, b) in enumerate(_cube_edges()) if a in on_face and b in on_face]
            faces.append((axis, side, edges))
    return faces


def _patches(case: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Crossed edges grouped by surface patch, and the ambiguous faces, of one configuration.

    Two crossed edges of a face are on one patch. On an ambiguous face (four crossed edges: inside
    corners on one diagonal) the patch cuts off each inside corner, so inside corners never connect
    across the face. Patches come in the reference's order, so that dual vertices are numbered alike:
    by (lowest corner on the minority side, lowest corner on the other side), the minority side
    being inside for at most four inside corners, else outside.
    """
    edges = _cube_edges()
    inside = [case >> i & 1 for i in range(8)]
    parent = {e: e for e, (a, b) in enumerate(edges) if inside[a] != inside[b]}

    def root(e: int) -> int:
        while parent[e] != e:
            e = parent[e]
        return e

    ambiguous = []
    for axis, side, face_edges in _cube_faces():
        crossed = [e for e in face_edges if e in parent]
        if len(crossed) == 2:
            parent[root(crossed[0])] = root(crossed[1])
        elif len(crossed) == 4:
            ambiguous.append((axis, side))
            for corner in {c for e in face_edges for c in edges[e] if inside[c]}:
                pair = [e for e in face_edges if corner in edges[e]]
                parent[root(pair[0])] = root(pair[1])
    groups: dict[int, list[int]] = {}
    for e in sorted(parent):
        groups.setdefault(root(e), []).append(e)
    minority = 1 if sum(inside) <= 4 else 0

    def order(group: list[int]) -> tuple[int, int]:
        ends = [c for e in group for c in edges[e]]
        return min(c for c in ends if inside[c] == minority), min(c for c in ends if inside[c] != minority)

    return sorted(groups.values(), key=order), ambiguous


@cache
def case_tables() -> CaseTables:
    """The FlexiCubes case tables, generated once (CPU)."""
    edge_group = torch.full((256, 12), -1, dtype=torch.long)
    num_groups = torch.zeros(256, dtype=torch.long)
    checked = torch.zeros(256, dtype=torch.bool)
    neighbour = torch.zeros(256, 3, dtype=torch.long)
    for case in range(256):
        groups, ambiguous = _patches(case)
        num_groups[case] = len(groups)
        for slot, group in enumerate(groups):
            edge_group[case, group] = slot
        if len(ambiguous) == 1 and case.bit_count() > 4:
            axis, side = ambiguous[0]
            checked[case] = True
            neighbour[case, axis] = 1 if side else -1
    return CaseTables(edge_group, num_groups, checked, neighbour)


@cache
def _tables_on(device: torch.device) -> tuple[CaseTables, torch.Tensor, torch.Tensor]:
    return case_tables().to(device), CUBE_EDGES.to(device), (1 << torch.arange(8)).to(device)


@dataclass(frozen=True)
class IsoSurface:
    """A triangle mesh from ``extract_isosurface``.

    Attributes:
        vertices: [V, 3] float dual vertices, in the frame of the input vertex positions. Every dual
            vertex is listed, also those of cubes at the grid's border that no face uses.
        faces: [F, 3] long vertex indices; normals (right-hand rule) point to positive sdf.
        attributes: [V, C] float vertex attributes interpolated like the positions, or None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    attributes: torch.Tensor | None


def extract_isosurface(
    cube_coords: torch.Tensor,
    cube_vertices: torch.Tensor,
    vertex_positions: torch.Tensor,
    vertex_sdf: torch.Tensor,
    resolution: int,
    beta: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    gamma: torch.Tensor | None = None,
    vertex_attributes: torch.Tensor | None = None,
    weight_scale: float = 0.99,
) -> IsoSurface:
    """FlexiCubes on a (sparse or dense) set of grid cubes.

    Cubes without a crossing are skipped, so the input may hold any superset of the crossed cubes.
    The output order follows the input's: with cubes sorted by (x, y, z) and vertices indexed in
    (x, y, z) order, as TRELLIS's dense grid is, vertices and faces come in the reference's order.

    Args:
        cube_coords: [M, 3] long cube positions in [0, resolution)^3, each cube once.
        cube_vertices: [M, 8] long indices into the vertex arrays of each cube's corners (``CUBE_CORNERS``
            order); cubes sharing a corner share its index.
        vertex_positions: [V, 3] float grid vertex positions (possibly deformed).
        vertex_sdf: [V] float signed distance, negative inside.
        resolution: cubes per axis; neighbours outside [0, resolution) do not exist.
        beta: [M, 12] float raw edge weights, or None for uniform weights.
        alpha: [M, 8] float raw corner weights, or None.
        gamma: [M] float raw quad-split weights, or None.
        vertex_attributes: [V, C] float attributes to interpolate onto the dual vertices, or None.
        weight_scale: how far the tanh/sigmoid-activated weights may move from their neutral value.

    Returns:
        The mesh: dual vertices, faces and interpolated attributes.
    """
    device = vertex_sdf.device
    tables, edges, bit_values = _tables_on(device)
    inside = vertex_sdf < 0

    # 1. Crossed cubes and their corner configurations.
    corner_inside = inside[cube_vertices]
    inside_count = corner_inside.sum(1)
    crossed = ((inside_count > 0) & (inside_count < 8)).nonzero().squeeze(1)
    if crossed.numel() == 0:
        return _empty(vertex_positions, vertex_attributes)
    coords, corners = cube_coords[crossed], cube_vertices[crossed]
    case = (corner_inside[crossed].long() * bit_values).sum(1)
    case = _resolve_ambiguous_faces(case, coords, resolution, tables)
    beta, alpha, gamma = _activate_weights(crossed, beta, alpha, gamma, weight_scale, vertex_positions)

    # 2. Edges shared between cubes become one global edge, keyed (first vertex, second vertex).
    num_vertices = vertex_sdf.shape[0]
    ends = corners[:, edges]  # [S, 12, 2]
    edge_keys, edge_of_slot, cubes_per_edge = torch.unique(
        (ends[..., 0] * num_vertices + ends[..., 1]).flatten(), return_inverse=True, return_counts=True
    )
    edge_first = edge_keys // num_vertices
    edge_crossed = inside[edge_first] != inside[edge_keys % num_vertices]

    # 3. Dual vertices: numbered by (patches per cube, cube, patch), as the reference batches them.
    num_groups = tables.num_groups[case]
    by_count = torch.sort(num_groups, stable=True).indices
    first_vertex = torch.empty_like(num_groups)
    first_vertex[by_count] = torch.cumsum(num_groups[by_count], 0) - num_groups[by_count]
    vertex_cube = torch.repeat_interleave(by_count, num_groups[by_count])
    group = tables.edge_group[case]  # [S, 12]
    cube_i, edge_j = (group >= 0).nonzero(as_tuple=True)
    slot_vertex = torch.full_like(group, -1)
    slot_vertex[cube_i, edge_j] = first_vertex[cube_i] + group[cube_i, edge_j]
    vertices, attributes = _place_dual_vertices(
        slot_vertex[cube_i, edge_j], ends[cube_i, edge_j], alpha[cube_i[:, None], edges[edge_j]],
        beta[cube_i, edge_j], vertex_cube.shape[0], vertex_positions, vertex_sdf, vertex_attributes,
    )  # fmt: skip

    # 4. Quads around crossed edges that all four neighbouring cubes share (not the grid's border).
    interior = (edge_crossed & (cubes_per_edge == 4))[edge_of_slot]
    slots = interior.nonzero().squeeze(1)
    quad_edges, order = torch.sort(edge_of_slot[slots], stable=True)
    quads = slot_vertex.flatten()[slots[order]].view(-1, 4)  # cubes in (x, y, z) order around the edge
    faces = _triangulate(quads, vertex_sdf[edge_first[quad_edges[::4]]] > 0, gamma[vertex_cube])
    return IsoSurface(vertices=vertices, faces=faces, attributes=attributes)


def _resolve_ambiguous_faces(
    case: torch.Tensor, coords: torch.Tensor, resolution: int, tables: CaseTables
) -> torch.Tensor:
    """Complement the cases of checked cube pairs that share their ambiguous face (FlexiCubes' C16/C19).

    Args:
        case: [S] long configurations of the crossed cubes.
        coords: [S, 3] long their positions.
        resolution: cubes per axis.
        tables: the case tables on the cubes' device.

    Returns:
        [S] long configurations after the fix (a new tensor where any changed).
    """
    checked = tables.checked[case].nonzero().squeeze(1)
    if checked.numel() == 0:
        return case
    checked_keys = torch.sort(grid_index(coords[checked], resolution)).values
    across = coords[checked] + tables.neighbour[case[checked]]
    in_grid = ((across >= 0) & (across < resolution)).all(1)
    both = in_grid & _contains(checked_keys, grid_index(across, resolution))
    case = case.clone()
    case[checked[both]] = 255 - case[checked[both]]
    return case


def _activate_weights(
    crossed: torch.Tensor,
    beta: torch.Tensor | None,
    alpha: torch.Tensor | None,
    gamma: torch.Tensor | None,
    weight_scale: float,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The crossed cubes' weights: beta, alpha in 1 +- weight_scale (tanh), gamma in (0, 1) (sigmoid)."""
    # Missing weights are neutral: 1 everywhere (also gamma, whose split choice then falls on q1-q3).
    neutral = like.new_ones(crossed.shape[0])
    beta = neutral[:, None].expand(-1, 12) if beta is None else torch.tanh(beta[crossed]) * weight_scale + 1
    alpha = neutral[:, None].expand(-1, 8) if alpha is None else torch.tanh(alpha[crossed]) * weight_scale + 1
    gamma = neutral if gamma is None else torch.sigmoid(gamma[crossed]) * weight_scale + (1 - weight_scale) / 2
    return beta, alpha, gamma


def _place_dual_vertices(
    target: torch.Tensor,
    ends: torch.Tensor,
    corner_alpha: torch.Tensor,
    beta: torch.Tensor,
    count: int,
    positions: torch.Tensor,
    sdf: torch.Tensor,
    attributes: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Beta-weighted means of the alpha-weighted edge crossings, per dual vertex.

    Args:
        target: [K] long dual vertex of each (cube, crossed edge) slot.
        ends: [K, 2] long the edge's (first, second) vertex indices.
        corner_alpha: [K, 2] float the cube's activated alpha at those two corners.
        beta: [K] float the cube's activated beta of the edge.
        count: number of dual vertices.
        positions: [V, 3] grid vertex positions; sdf: [V]; attributes: [V, C] or None.

    Returns:
        [count, 3] positions and [count, C] attributes (or None).
    """
    weight = sdf[ends] * corner_alpha  # the crossing is where the weighted sdf changes sign
    w0, w1 = weight[:, :1], weight[:, 1:]
    weight_sum = torch.zeros(count, 1, dtype=beta.dtype, device=beta.device).index_add_(0, target, beta[:, None])

    def mean_crossing(values: torch.Tensor) -> torch.Tensor:
        crossing = (values[ends[:, 0]] * w1 - values[ends[:, 1]] * w0) / (w1 - w0)
        total = torch.zeros(count, values.shape[1], dtype=values.dtype, device=values.device)
        return total.index_add_(0, target, crossing * beta[:, None]) / weight_sum

    return mean_crossing(positions), None if attributes is None else mean_crossing(attributes)


def _triangulate(quads: torch.Tensor, first_outside: torch.Tensor, vertex_gamma: torch.Tensor) -> torch.Tensor:
    """Two triangles per quad, wound so that normals point outside.

    Args:
        quads: [Q, 4] long dual vertices around each edge, cubes in (x, y, z) order, so (0, 1, 3, 2)
            runs around the edge.
        first_outside: [Q] bool whether the edge's first vertex has sdf > 0, which sets the winding;
            those quads come first, as in the reference. Like the reference, this test alone takes
            an sdf of exactly 0 as inside, so such (measure-zero) edges wind inwards.
        vertex_gamma: [V] float activated gamma of each dual vertex's cube.

    Returns:
        [2Q, 3] long faces.
    """
    quads = torch.cat([quads[first_outside][:, [0, 1, 3, 2]], quads[~first_outside][:, [2, 3, 1, 0]]])
    gamma = vertex_gamma[quads]
    along_02 = gamma[:, 0] * gamma[:, 2] > gamma[:, 1] * gamma[:, 3]
    split = torch.where(along_02[:, None], quads[:, _SPLIT_02], quads[:, _SPLIT_13])
    return split.reshape(-1, 3)


def grid_index(coords: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3] integer coordinates -> [N] long index in an x-major size^3 grid (ascending = (x, y, z) order)."""
    coords = coords.long()
    return (coords[:, 0] * size + coords[:, 1]) * size + coords[:, 2]


def _contains(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[Q] bool: whether each query occurs in the ascending ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, queries).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[position] == queries


def _empty(positions: torch.Tensor, attributes: torch.Tensor | None) -> IsoSurface:
    return IsoSurface(
        vertices=positions.new_zeros(0, 3),
        faces=torch.zeros(0, 3, dtype=torch.long, device=positions.device),
        attributes=None if attributes is None else attributes.new_zeros(0, attributes.shape[1]),
    )
