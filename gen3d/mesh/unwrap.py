"""Fast UV unwrapping: box-side charts, planar projection, shelf-packed atlas (vectorised numpy).

Measured against ``xatlas`` in ``scripts/bench_unwrap.py``. Each chart (``gen3d.mesh.charts``)
is projected orthographically onto the plane across its area-weighted mean normal when every face
still faces that normal by more than ``MIN_FACING`` (less stretch than the box axis), else across
its box axis, which every face faces by construction. Either way no face flips, so a chart never
folds over itself locally. Each chart is turned to the angle of its smallest bounding rectangle,
then the rectangles are packed at one common scale (uniform texel density) with a gutter.
"""

import numpy as np

from gen3d.mesh.charts import AXES, MIN_FACING, Charts, face_normals, segment_charts
from gen3d.mesh.pack import pack_rectangles
from gen3d.results import MeshAsset, UVMesh

#: Empty texels between islands: at a 1024 atlas, mip level 2 (256) still separates them.
DEFAULT_GUTTER = 4
#: Chart rotations tried for the tightest bounding box (every 90 / 16 = 5.6 degrees).
ROTATION_STEPS = 16


def _grouped_sum(values: np.ndarray, group: np.ndarray, count: int) -> np.ndarray:
    """Sum of rows of ``values`` (N, C) per group id (N,) -> (count, C)."""
    return np.stack([np.bincount(group, weights=values[:, c], minlength=count) for c in range(values.shape[1])], 1)


def projection_directions(normals: np.ndarray, charts: Charts) -> np.ndarray:
    """Unit projection direction (C, 3) per chart: its mean normal if all faces face it, else its axis.

    Args:
        normals: (F, 3) area-weighted face normals.
        charts: the partition.
    """
    mean = _grouped_sum(normals, charts.face_chart, charts.count)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-30)
    unit = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    facing = np.full(charts.count, np.inf)
    np.minimum.at(facing, charts.face_chart, np.einsum("fd,fd->f", unit, mean[charts.face_chart]))
    return np.where((facing > MIN_FACING)[:, None], mean, AXES[charts.axis])


def plane_bases(directions: np.ndarray) -> np.ndarray:
    """Right-handed orthonormal tangent pairs (C, 2, 3) across unit ``directions`` (C, 3)."""
    # Cross with the world axis least aligned with the direction: never near-parallel.
    helper = np.eye(3)[np.argmin(np.abs(directions), axis=1)]
    first = np.cross(helper, directions)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    return np.stack([first, np.cross(directions, first)], axis=1)


def _grouped_extent(points: np.ndarray, group: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group min and max (count, 2) of points (N, 2); every group id in [0, count) occurs."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(count))
    ordered = points[order]
    return np.minimum.reduceat(ordered, starts), np.maximum.reduceat(ordered, starts)


def tightest_rotation(points: np.ndarray, group: np.ndarray, count: int) -> np.ndarray:
    """Per-group angle (count,) in [0, 90°) of the smallest axis-aligned bounding box of each 2D cloud.

    Tries ``ROTATION_STEPS`` angles at once: a box's area repeats every 90°, and a chart's
    outline is too ragged for the exact (convex-hull) answer to be worth its cost.
    """
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(count))
    x, y = points[order, 0], points[order, 1]
    angles = np.arange(ROTATION_STEPS) * (0.5 * np.pi / ROTATION_STEPS)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    size = []
    for turned in (cos * x - sin * y, sin * x + cos * y):  # (A, N) each
        size.append(np.maximum.reduceat(turned, starts, axis=1) - np.minimum.reduceat(turned, starts, axis=1))
    return angles[np.argmin(size[0] * size[1], axis=0)]


def chart_coordinates(vertices: np.ndarray, faces: np.ndarray, charts: Charts) -> np.ndarray:
    """Each face corner's 2D position (F, 3, 2) in its chart's plane, turned to its tightest box, world units."""
    directions = projection_directions(face_normals(vertices, faces), charts)
    bases = plane_bases(directions)[charts.face_chart]  # (F, 2, 3)
    flat = np.einsum("fkd,fcd->fck", bases, vertices[faces].astype(np.float64)).reshape(-1, 2)
    corner_chart = np.repeat(charts.face_chart, 3)
    angle = tightest_rotation(flat, corner_chart, charts.count)[corner_chart]
    cos, sin = np.cos(angle), np.sin(angle)
    turned = np.stack([cos * flat[:, 0] - sin * flat[:, 1], sin * flat[:, 0] + cos * flat[:, 1]], axis=1)
    return turned.reshape(-1, 3, 2)


def split_seams(faces: np.ndarray, face_chart: np.ndarray, chart_count: int) -> tuple[np.ndarray, np.ndarray]:
    """One vertex per (input vertex, chart) pair.

    Returns:
        source (V',) input vertex of each new vertex, and faces (F, 3) renumbered onto new vertices.
    """
    keys = faces.astype(np.int64) * chart_count + face_chart[:, None]
    unique, new_faces = np.unique(keys.reshape(-1), return_inverse=True)
    return unique // chart_count, new_faces.reshape(-1, 3)


def unwrap(mesh: MeshAsset, texture_size: int = 1024, gutter: int = DEFAULT_GUTTER) -> UVMesh:
    """Cut the mesh into charts and lay them out in a square atlas.

    Args:
        mesh: a clean mesh (model frame); colours are ignored, the texture is baked later.
        texture_size: atlas side in texels (T), >= 16.
        gutter: empty texels between islands, >= 2 (bilinear sampling reads one texel beyond).

    Returns:
        ``UVMesh`` with seam vertices split and UVs in glTF convention, packed for ``texture_size``.

    Raises:
        ValueError: bad ``texture_size`` or ``gutter``, an empty mesh, or charts that do not fit.
    """
    if texture_size < 16:
        raise ValueError(f"texture_size: expected >= 16 texels, got {texture_size}")
    if gutter < 2:
        raise ValueError(f"gutter: expected >= 2 texels, got {gutter}")
    if len(mesh.faces) == 0:
        raise ValueError("mesh: expected at least one face, got none")
    charts = segment_charts(mesh.vertices, mesh.faces)
    corners = chart_coordinates(mesh.vertices, mesh.faces, charts)  # (F, 3, 2)
    corner_chart = np.repeat(charts.face_chart, 3)
    flat = corners.reshape(-1, 2)
    low, high = _grouped_extent(flat, corner_chart, charts.count)
    packing = pack_rectangles(high - low, texture_size, gutter)
    local = flat - low[corner_chart]
    if packing.turned:  # a mirror image of the chart: harmless for a colour texture
        local = local[:, ::-1]
    texels = local * packing.scale + packing.offsets[corner_chart]
    source, faces = split_seams(mesh.faces, charts.face_chart, charts.count)
    uvs = np.zeros((len(source), 2))
    uvs[faces.reshape(-1)] = texels / texture_size
    return UVMesh(
        vertices=mesh.vertices[source].astype(np.float32),
        faces=faces.astype(np.int64),
        uvs=uvs.astype(np.float32),
        texture_size=texture_size,
    )
