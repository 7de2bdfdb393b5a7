"""Mesh clean-up: degenerate and duplicate faces, floaters, outward winding, optional smoothing.

All steps are vectorised numpy/scipy and keep vertex colours aligned with their vertices.
"""

import logging

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from gen3d.mesh.metrics import face_areas, signed_volumes
from gen3d.results import MeshAsset

logger = logging.getLogger(__name__)

#: Components whose surface area is below this share of the total are dropped as floaters.
#: TripoSR's specks are a few grid cells across: at resolution 256 (cell 0.0068) a speck of 3
#: cells radius has area ~0.005, 0.17 % of a unit-sized object's ~3 area units, while a real
#: detached part of 5 % of the object's side (a button, a handle) has ~0.03, about 1 %: kept.
MIN_COMPONENT_SHARE = 0.002


def _with_faces(mesh: MeshAsset, faces: np.ndarray) -> MeshAsset:
    return MeshAsset(vertices=mesh.vertices, faces=faces, vertex_colors=mesh.vertex_colors)


def position_groups(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices at exactly the same position, grouped.

    Returns:
        group (V,) int64 id of each vertex's position, and first (G,) the lowest vertex index of
        each group.
    """
    order = np.lexsort((vertices[:, 2], vertices[:, 1], vertices[:, 0]))
    ordered = vertices[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group = np.empty(len(vertices), dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    # lexsort is stable, so each run of equal positions starts at its lowest index.
    return group, order[starts]


def merge_coincident_vertices(mesh: MeshAsset) -> MeshAsset:
    """Point faces at one vertex per exact position (the first in order), keeping all vertices.

    Marching cubes puts several edge vertices on a grid corner whose value equals the level; their
    faces have zero area. Merging first lets ``drop_degenerate_faces`` remove those faces without
    opening holes in the connectivity (unused duplicates go with ``drop_unreferenced_vertices``).
    """
    group, first = position_groups(mesh.vertices)
    return _with_faces(mesh, first[group][mesh.faces])


def drop_degenerate_faces(mesh: MeshAsset) -> MeshAsset:
    """Drop faces that repeat a vertex index or have exactly zero area (collinear corners)."""
    f = mesh.faces
    distinct = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return _with_faces(mesh, f[distinct & (face_areas(mesh.vertices, f) > 0.0)])


def drop_duplicate_faces(mesh: MeshAsset) -> MeshAsset:
    """Keep the first of faces with the same three vertices (either winding), in original order."""
    key = np.sort(mesh.faces, axis=1)
    order = np.lexsort(key.T[::-1])
    sorted_keys = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)
    return _with_faces(mesh, mesh.faces[np.sort(order[first])])


def drop_unreferenced_vertices(mesh: MeshAsset) -> MeshAsset:
    """Remove vertices no face uses and renumber faces; vertex order is otherwise kept."""
    used = np.zeros(len(mesh.vertices), dtype=bool)
    used[mesh.faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return MeshAsset(
        vertices=mesh.vertices[used], faces=new_index[mesh.faces], vertex_colors=mesh.vertex_colors[used]
    )


def face_components(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Connected-component label (F,) of each face; faces sharing a vertex are connected."""
    rows = faces.reshape(-1)
    cols = np.roll(faces, 1, axis=1).reshape(-1)
    graph = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]]


def drop_floaters(mesh: MeshAsset, min_share: float = MIN_COMPONENT_SHARE) -> MeshAsset:
    """Drop components whose area is below ``min_share`` of the total; the largest always stays.

    Args:
        mesh: any mesh.
        min_share: in [0, 1); 0 keeps every component.

    Raises:
        ValueError: ``min_share`` outside [0, 1).
    """
    labels = face_components(mesh.faces, len(mesh.vertices))
    return _with_faces(mesh, mesh.faces[outside_floaters(mesh, labels, min_share)])


def outside_floaters(mesh: MeshAsset, labels: np.ndarray, min_share: float) -> np.ndarray:
    """(F,) bool: the faces ``drop_floaters`` keeps, given ``face_components`` ``labels``."""
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share: expected a share in [0, 1), got {min_share}")
    area = np.bincount(labels, weights=face_areas(mesh.vertices, mesh.faces))
    keep = area >= min_share * area.sum()
    keep[np.argmax(area)] = True
    if not keep.all():
        logger.info("dropped %d of %d components (%.3g%% of the area)", (~keep).sum(), len(keep),
                    100.0 * area[~keep].sum() / area.sum())  # fmt: skip
    return keep[labels]


def orient_outward(mesh: MeshAsset, labels: np.ndarray | None = None) -> MeshAsset:
    """Reverse the winding of every component whose signed volume is negative (inside out).

    Marching cubes already winds counter-clockwise from outside; this makes it a guarantee for
    any input whose components are consistently wound, each judged on its own.

    Args:
        mesh: any mesh.
        labels: its ``face_components``, when the caller has them already.
    """
    if labels is None:
        labels = face_components(mesh.faces, len(mesh.vertices))
    volume = np.bincount(labels, weights=signed_volumes(mesh.vertices, mesh.faces))
    flip = (volume < 0)[labels]
    faces = mesh.faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return _with_faces(mesh, faces)


def _umbrella(faces: np.ndarray, vertex_count: int) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency (V, V): ``L @ x`` is the mean of each vertex's neighbours."""
    rows = np.concatenate([faces.reshape(-1), np.roll(faces, 1, axis=1).reshape(-1)])
    cols = np.concatenate([np.roll(faces, 1, axis=1).reshape(-1), faces.reshape(-1)])
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(vertex_count, vertex_count))
    adjacency.data[:] = 1.0  # an edge shared by two faces was summed twice
    degree = np.asarray(adjacency.sum(axis=1)).reshape(-1)
    return sparse.diags(1.0 / np.maximum(degree, 1.0)) @ adjacency


def taubin_smooth(mesh: MeshAsset, iterations: int = 5, lam: float = 0.5, mu: float = -0.53) -> MeshAsset:
    """Taubin's lambda/mu smoothing: removes marching-cubes terracing without shrinking the shape.

    Args:
        mesh: any mesh; faces and colours are unchanged.
        iterations: lambda/mu pairs.
        lam: positive (smoothing) step.
        mu: negative (inflating) step, slightly larger in magnitude than ``lam``.
    """
    neighbours = _umbrella(mesh.faces, len(mesh.vertices))
    points = mesh.vertices.astype(np.float64)
    for _ in range(iterations):
        for step in (lam, mu):
            points = points + step * (neighbours @ points - points)
    return MeshAsset(vertices=points.astype(np.float32), faces=mesh.faces, vertex_colors=mesh.vertex_colors)


def clean(mesh: MeshAsset, min_component_share: float = MIN_COMPONENT_SHARE, smooth_iterations: int = 0
          ) -> MeshAsset:  # fmt: skip
    """Coincident vertices merged; degenerate and duplicate faces, floaters and unused vertices
    removed; winding outward.

    Args:
        mesh: any triangle mesh (model frame).
        min_component_share: see ``drop_floaters``.
        smooth_iterations: Taubin lambda/mu pairs; 0 (default) leaves positions untouched.

    Returns:
        The cleaned mesh; vertex colours follow their vertices.
    """
    mesh = drop_duplicate_faces(drop_degenerate_faces(merge_coincident_vertices(mesh)))
    labels = face_components(mesh.faces, len(mesh.vertices))
    kept = outside_floaters(mesh, labels, min_component_share)
    mesh = drop_unreferenced_vertices(_with_faces(mesh, mesh.faces[kept]))
    if smooth_iterations:
        mesh = taubin_smooth(mesh, smooth_iterations)
    # Dropping whole components, renumbering vertices and smoothing leave each face's component.
    return orient_outward(mesh, labels[kept])
