"""Fast UV unwrapping: box-side charts, planar projection, shelf-packed atlas (vectorised torch).

Measured against ``xatlas`` in ``scripts/bench_unwrap.py``. Each chart (``gen3d.mesh.charts``)
is projected orthographically onto the plane across its area-weighted mean normal when every face
still faces that normal by more than ``MIN_FACING`` (less stretch than the box axis), else across
its box axis, which every face faces by construction. Either way no face flips, so a chart never
folds over itself locally. Each chart is turned to the angle of its smallest bounding rectangle,
then the rectangles are packed at one common scale (uniform texel density) with a gutter.

Everything but the packing (a few hundred rectangles, numpy) runs on ``device``: the service
unwraps on the GPU inside the bake, so the CPU stage before it only decimates and cleans.
"""

import math

import numpy as np
import torch

from gen3d.mesh.charts import AXES, MIN_FACING, Charts, face_normals, segment_charts
from gen3d.mesh.pack import pack_rectangles
from gen3d.results import MeshAsset, UVMesh

#: Empty texels between islands: at a 1024 atlas, mip level 2 (256) still separates them.
DEFAULT_GUTTER = 4
#: Chart rotations tried for the tightest bounding box (every 90 / 16 = 5.6 degrees).
ROTATION_STEPS = 16


def _grouped(values: torch.Tensor, group: torch.Tensor, count: int, reduce: str) -> torch.Tensor:
    """``reduce`` (``sum``, ``amin`` or ``amax``) of ``values`` (..., N) per group id (N,) -> (..., count).

    Every group id in [0, count) must occur (a chart has at least one face).
    """
    start = 0.0 if reduce == "sum" else math.inf if reduce == "amin" else -math.inf
    out = torch.full((*values.shape[:-1], count), start, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(-1, group.expand_as(values), values, reduce)


def projection_directions(normals: torch.Tensor, charts: Charts) -> torch.Tensor:
    """Unit projection direction (C, 3) per chart: its mean normal if all faces face it, else its axis.

    Args:
        normals: (F, 3) area-weighted face normals.
        charts: the partition.
    """
    mean = _grouped(normals.T, charts.face_chart, charts.count, "sum").T
    mean = mean / torch.linalg.norm(mean, dim=1, keepdim=True).clamp_min(1e-30)
    unit = normals / torch.linalg.norm(normals, dim=1, keepdim=True).clamp_min(1e-30)
    facing = _grouped((unit * mean[charts.face_chart]).sum(dim=1), charts.face_chart, charts.count, "amin")
    return torch.where((facing > MIN_FACING)[:, None], mean, AXES.to(normals.device)[charts.axis])


def plane_bases(directions: torch.Tensor) -> torch.Tensor:
    """Right-handed orthonormal tangent pairs (C, 2, 3) across unit ``directions`` (C, 3)."""
    # Cross with the world axis least aligned with the direction: never near-parallel.
    helper = torch.eye(3, dtype=directions.dtype, device=directions.device)[directions.abs().argmin(dim=1)]
    first = torch.linalg.cross(helper, directions)
    first = first / torch.linalg.norm(first, dim=1, keepdim=True)
    return torch.stack([first, torch.linalg.cross(directions, first)], dim=1)


def _rotated(points: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Points (N, 2) turned by ``angle`` (N,) or a scalar, counter-clockwise."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos * points[:, 0] - sin * points[:, 1], sin * points[:, 0] + cos * points[:, 1]], dim=1)


def tightest_rotation(points: torch.Tensor, group: torch.Tensor, count: int) -> torch.Tensor:
    """Per-group angle (count,) in [0, 90°) of the smallest axis-aligned bounding box of each 2D cloud.

    Tries ``ROTATION_STEPS`` angles at once: a box's area repeats every 90°, and a chart's
    outline is too ragged for the exact (convex-hull) answer to be worth its cost.
    """
    angles = torch.arange(ROTATION_STEPS, dtype=points.dtype, device=points.device) * (0.5 * math.pi / ROTATION_STEPS)
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    x, y = points[:, 0], points[:, 1]
    area = torch.ones((ROTATION_STEPS, count), dtype=points.dtype, device=points.device)
    for turned in (cos * x - sin * y, sin * x + cos * y):  # (A, N) each
        area *= _grouped(turned, group, count, "amax") - _grouped(turned, group, count, "amin")
    return angles[area.argmin(dim=0)]


def chart_coordinates(vertices: torch.Tensor, faces: torch.Tensor, charts: Charts) -> torch.Tensor:
    """Each face corner's 2D position (F, 3, 2) in its chart's plane, turned to its tightest box, world units."""
    directions = projection_directions(face_normals(vertices, faces), charts)
    bases = plane_bases(directions)[charts.face_chart]  # (F, 2, 3)
    flat = torch.einsum("fkd,fcd->fck", bases, vertices[faces].double()).reshape(-1, 2)
    corner_chart = charts.face_chart.repeat_interleave(3)
    angle = tightest_rotation(flat, corner_chart, charts.count)[corner_chart]
    return _rotated(flat, angle).reshape(-1, 3, 2)


def split_seams(faces: torch.Tensor, face_chart: torch.Tensor, chart_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One vertex per (input vertex, chart) pair.

    Returns:
        source (V',) input vertex of each new vertex, and faces (F, 3) renumbered onto new vertices.
    """
    keys = faces * chart_count + face_chart[:, None]
    unique, new_faces = torch.unique(keys.reshape(-1), return_inverse=True)
    return unique // chart_count, new_faces.reshape(-1, 3)


def unwrap(mesh: MeshAsset, texture_size: int = 1024, gutter: int = DEFAULT_GUTTER,
           device: torch.device | str = "cpu") -> UVMesh:  # fmt: skip
    """Cut the mesh into charts and lay them out in a square atlas.

    Args:
        mesh: a clean mesh (model frame); colours are ignored, the texture is baked later.
        texture_size: atlas side in texels (T), >= 16.
        gutter: empty texels between islands, >= 2 (bilinear sampling reads one texel beyond).
        device: where the charts and coordinates are computed.

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
    vertices = torch.as_tensor(np.asarray(mesh.vertices), device=device)
    faces = torch.as_tensor(np.asarray(mesh.faces, dtype=np.int64), device=device)
    charts = segment_charts(vertices, faces)
    flat = chart_coordinates(vertices, faces, charts).reshape(-1, 2)
    corner_chart = charts.face_chart.repeat_interleave(3)
    low = _grouped(flat.T, corner_chart, charts.count, "amin").T
    high = _grouped(flat.T, corner_chart, charts.count, "amax").T
    packing = pack_rectangles((high - low).cpu().numpy(), texture_size, gutter)
    local = flat - low[corner_chart]
    if packing.turned:  # a mirror image of the chart: harmless for a colour texture
        local = local.flip(1)
    offsets = torch.from_numpy(packing.offsets).to(device)
    texels = local * packing.scale + offsets[corner_chart]
    source, new_faces = split_seams(faces, charts.face_chart, charts.count)
    uvs = torch.zeros((len(source), 2), dtype=texels.dtype, device=device)
    uvs[new_faces.reshape(-1)] = texels / texture_size
    return UVMesh(
        vertices=mesh.vertices[source.cpu().numpy()].astype(np.float32),
        faces=new_faces.cpu().numpy().astype(np.int64),
        uvs=uvs.float().cpu().numpy(),
        texture_size=texture_size,
    )
