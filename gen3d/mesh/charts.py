"""Chart segmentation for UV unwrapping: faces grouped by dominant normal, then by connectivity.

Each face is labelled with the box side (±x, ±y, ±z) its smoothed normal faces most; labels are
smoothed over edge neighbours so marching-cubes noise does not shred the charts, and each
connected run of one label becomes a chart. A face only ever joins a side it faces by more than
``MIN_FACING`` (the cosine to that axis), so projecting a chart along its axis keeps every face's
orientation: charts are locally injective by construction.

Written in torch so that it runs where the bake runs: on the GPU in the service (the whole unwrap
took 14 ms there against 40 ms for the numpy original on one core of the GPU host, 30k faces;
BENCHMARKS.md, "The production graph"), and on the CPU in tests and the tiny preset.
"""

from dataclasses import dataclass

import torch

#: The six box directions a chart can be projected along: +x, +y, +z, -x, -y, -z.
AXES = torch.cat([torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64)])
#: Minimum cosine between a face normal and its chart's axis (acos 0.2 = 78°): keeps projected
#: triangles well away from edge-on, where their texel density would collapse.
MIN_FACING = 0.2
#: Rounds of majority voting over edge neighbours.
SMOOTHING_ROUNDS = 4
#: Charts with fewer faces are dissolved into a neighbouring chart when a neighbour's side allows.
MIN_CHART_FACES = 12


@dataclass(frozen=True)
class Charts:
    """A partition of a mesh's faces into charts.

    Attributes:
        face_chart: (F,) int64 chart id of each face, ids in [0, count), numbered in the order of
            each chart's first face.
        axis: (count,) int64 index into ``AXES`` of each chart's projection direction.
    """

    face_chart: torch.Tensor
    axis: torch.Tensor

    @property
    def count(self) -> int:
        """Number of charts."""
        return len(self.axis)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted face normals (F, 3) float64: the cross product of two edges (length 2 x area)."""
    tri = vertices[faces].double()
    return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def face_adjacency(faces: torch.Tensor) -> torch.Tensor:
    """Pairs (E, 2) of faces that share an edge; a non-manifold edge links its faces in a chain."""
    edges = torch.stack([faces, faces.roll(-1, dims=1)], dim=2).reshape(-1, 2).sort(dim=1).values
    owner = torch.arange(len(faces), device=faces.device).repeat_interleave(3)
    key, order = torch.sort(edges[:, 0] * (int(edges.max()) + 1) + edges[:, 1], stable=True)
    owner = owner[order]
    same = key[1:] == key[:-1]
    return torch.stack([owner[:-1][same], owner[1:][same]], dim=1)


def connected_labels(pairs: torch.Tensor, count: int) -> tuple[int, torch.Tensor]:
    """Connected components of an undirected graph: (number, id (count,) of each node).

    Ids follow the order of each component's lowest node, as scipy's ``connected_components``
    numbers them. Min-label hooking (a node and its label's node take the lowest label across
    each edge) plus pointer jumping: a few rounds on a mesh, each a handful of kernels, so it
    stays on the device instead of a round trip through scipy.

    Args:
        pairs: (E, 2) int64 edges between nodes in [0, count).
        count: number of nodes.
    """
    label = torch.arange(count, device=pairs.device)
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        la, lb = label[a], label[b]
        low = torch.minimum(la, lb)
        hooked = label.clone()
        for target in (a, b, la, lb):  # every index written holds a node of the same component
            hooked.scatter_reduce_(0, target, low, "amin")
        while True:  # each step halves the chains, until every node points at its root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, label):
            break
        label = hooked
    roots, ids = torch.unique(label, return_inverse=True)
    return len(roots), ids


def smoothed_normals(vertices: torch.Tensor, faces: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Face normals (F, 3) averaged over the faces around each corner (a one-ring blur)."""
    vertex_normals = torch.zeros((len(vertices), 3), dtype=normals.dtype, device=normals.device)
    vertex_normals.index_add_(0, faces.reshape(-1), normals.repeat_interleave(3, dim=0))
    return vertex_normals[faces].sum(dim=1)


def _tally(face: torch.Tensor, side: torch.Tensor, face_count: int) -> torch.Tensor:
    """Votes (F, 6): how many times each face was given each box side."""
    sides = len(AXES)
    return torch.bincount(face * sides + side, minlength=face_count * sides).reshape(face_count, sides)


def side_cosines(directions: torch.Tensor) -> torch.Tensor:
    """Dot products (N, 6) of directions (N, 3) with ``AXES``: the directions, then their negatives."""
    return torch.cat([directions, -directions], dim=1)


def _allowed(unit_normals: torch.Tensor) -> torch.Tensor:
    """(F, 6) bool: the box sides each face may be projected along."""
    return side_cosines(unit_normals) > MIN_FACING


def _both_ways(adjacency: torch.Tensor) -> torch.Tensor:
    """Each adjacency pair in both directions, so each face hears each neighbour."""
    return torch.cat([adjacency, adjacency.flip(1)])


def _vote(labels: torch.Tensor, adjacency: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One round of majority voting: each face takes its neighbours' commonest allowed side."""
    pairs = _both_ways(adjacency)
    votes = _tally(pairs[:, 0], labels[pairs[:, 1]], len(labels)).double()
    votes[torch.arange(len(labels), device=labels.device), labels] += 1.5  # a face keeps its side on a tie
    votes[~allowed] = -1.0
    return votes.argmax(dim=1)


def _components(labels: torch.Tensor, adjacency: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Connected runs of equal labels: (count, chart id (F,))."""
    same = adjacency[labels[adjacency[:, 0]] == labels[adjacency[:, 1]]]
    return connected_labels(same, len(labels))


def _dissolve_small(labels: torch.Tensor, chart: torch.Tensor, count: int, adjacency: torch.Tensor,
                    allowed: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Relabel faces of charts under ``MIN_CHART_FACES`` faces to a neighbouring allowed side."""
    small = torch.bincount(chart, minlength=count)[chart] < MIN_CHART_FACES
    pairs = _both_ways(adjacency)
    # Only faces of big charts vote, so a small chart is absorbed by a big neighbour.
    pairs = pairs[small[pairs[:, 0]] & ~small[pairs[:, 1]]]
    votes = _tally(pairs[:, 0], labels[pairs[:, 1]], len(labels))
    votes[~allowed] = 0
    best = votes.argmax(dim=1)
    take = small & (votes.amax(dim=1) > 0)
    return torch.where(take, best, labels)


def segment_charts(vertices: torch.Tensor, faces: torch.Tensor) -> Charts:
    """Partition faces into charts, each projectable along one box axis without flipping a face.

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) int64 on the same device, any winding consistent with the normals wanted.

    Returns:
        ``Charts`` with a chart id per face and each chart's axis, on the faces' device.
    """
    normals = face_normals(vertices, faces)
    unit = normals / torch.linalg.norm(normals, dim=1, keepdim=True).clamp_min(1e-30)
    allowed = _allowed(unit)
    # A unit normal faces some side by >= 1/sqrt(3) > MIN_FACING; only a zero-area face allows
    # none, and any side will do for it.
    allowed[~allowed.any(dim=1), 0] = True
    labels = (side_cosines(smoothed_normals(vertices, faces, normals)) - 1e3 * (~allowed).double()).argmax(dim=1)
    adjacency = face_adjacency(faces)
    for _ in range(SMOOTHING_ROUNDS):
        labels = _vote(labels, adjacency, allowed)
    count, chart = _components(labels, adjacency)
    for _ in range(2):
        labels = _dissolve_small(labels, chart, count, adjacency, allowed)
        count, chart = _components(labels, adjacency)
    face_index = torch.arange(len(faces), device=faces.device)
    first_face = torch.full((count,), len(faces), device=faces.device).scatter_reduce_(0, chart, face_index, "amin")
    return Charts(face_chart=chart, axis=labels[first_face])
