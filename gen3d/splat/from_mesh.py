"""Surface gaussians from a triangle mesh: even area-weighted samples -> flat disks on the surface.

Sampling is stratified along a space-filling (Morton) order of the faces: faces sorted by the
Morton code of their centroid are laid end to end by area, and sample ``i`` falls at a jittered
position in the i-th of ``count`` equal slices of the total area. Neighbouring slices are
neighbouring surface patches, so samples spread evenly (no clumps or holes like i.i.d. sampling),
and a face holding several samples places them on a low-discrepancy (R2) sequence.

Each sample becomes a disk: two log-scales ~ the local sample spacing in the tangent plane, a
third much smaller along the normal, a quaternion (w, x, y, z) turning local z onto the normal.
Frame-agnostic: works in whatever frame the mesh is in (the model frame before export).
"""

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from gen3d.errors import StageOutputError
from gen3d.orientation import quaternion_multiply
from gen3d.results import Gaussians, MeshAsset

SH_C0 = 0.28209479177387814
#: Tangent scale (sigma) of a disk in units of the local spacing. Validators scale opacities of
#: a unit-extent splat by 1/1.5, so disks must overlap a lot for the surface to hide what is
#: behind it; larger disks blur sharp edges outward. 0.7 balances colour PSNR (~33 dB) against
#: silhouette IoU (>= 0.97) at 518 px (scripts/splat_agreement.py).
DISK_SIGMA_PER_SPACING = 0.7
#: Normal-axis scale relative to the tangent scale: thin enough to stay on the surface.
DISK_THICKNESS = 0.05
#: Neighbours used to estimate the local area per sample.
_SPACING_NEIGHBOURS = 8
# R2 low-discrepancy sequence steps (1/phi2, 1/phi2^2, phi2 the plastic number).
_R2_STEP = np.array([0.7548776662466927, 0.5698402909980532])


@dataclass(frozen=True)
class SurfaceSamples:
    """Points on a mesh surface.

    Attributes:
        points: (N, 3) float32 positions, in the mesh's frame.
        normals: (N, 3) float32 outward unit normals of the faces they lie on.
        colors: (N, 3) float32 RGB in [0, 1], barycentric blend of vertex colours.
        spacing: (N,) float32 local sample spacing (square root of surface area per sample),
            same units as ``points``.
    """

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    spacing: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _morton_codes(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Morton (Z-order) codes (N,) uint64 of points (N, 3), quantised to ``2**bits`` per axis."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    cells = ((points - lo) / np.maximum(hi - lo, 1e-12) * (2**bits - 1)).astype(np.uint64)
    codes = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            codes |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return codes


def _check_mesh(mesh: MeshAsset, count: int) -> None:
    """Raise ``ValueError`` for a bad count; ``StageOutputError`` for an unusable mesh."""
    if count < 1:
        raise ValueError(f"count: expected a positive number of samples, got {count}")
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise StageOutputError(f"mesh is empty ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)")
    if not np.isfinite(mesh.vertices).all():
        raise StageOutputError("mesh has non-finite vertex positions")


def _local_spacing(points: np.ndarray, ideal: float) -> np.ndarray:
    """Square root of the area per sample around each point, from its k-th nearest neighbour.

    ``k`` neighbours within radius ``r`` means a density of k / (pi r^2); the estimate is clipped
    to [0.5, 2] x ``ideal`` so thin parts (neighbours across a gap) and the few samples of a
    tiny mesh stay sane.
    """
    k = min(_SPACING_NEIGHBOURS, len(points) - 1)
    if k < 1:
        return np.full(len(points), ideal)
    distances, _ = cKDTree(points).query(points, k=k + 1)
    spacing = distances[:, k] * np.sqrt(np.pi / k)
    return np.clip(spacing, 0.5 * ideal, 2.0 * ideal)


def sample_surface(mesh: MeshAsset, count: int, seed: int = 0) -> SurfaceSamples:
    """Draw ``count`` evenly spread, area-weighted points on the mesh surface.

    Args:
        mesh: triangle mesh (any frame) with counter-clockwise faces and uint8 vertex colours.
        count: number of samples N (>= 1).
        seed: seed of the jitter; the same seed gives the same samples.

    Returns:
        ``SurfaceSamples`` with N points.

    Raises:
        ValueError: ``count`` < 1.
        StageOutputError: the mesh is empty, non-finite or has zero area.
    """
    _check_mesh(mesh, count)
    rng = np.random.default_rng(seed)
    vertices = mesh.vertices.astype(np.float64)
    corners = vertices[mesh.faces]  # (F, 3 corners, 3)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    areas = 0.5 * np.linalg.norm(cross, axis=1)
    total = float(areas.sum())
    if not total > 0.0:
        raise StageOutputError("mesh has zero surface area")

    # 1. Faces in Morton order, laid end to end by area; one jittered sample per equal slice.
    order = np.argsort(_morton_codes(corners.mean(axis=1)), kind="stable")
    ends = np.cumsum(areas[order])
    targets = (np.arange(count) + rng.random(count)) * (total / count)
    faces = order[np.minimum(np.searchsorted(ends, targets, side="right"), len(order) - 1)]

    # 2. Within a face, the j-th of its samples sits on an R2 sequence (random start per sample
    #    group), mapped area-preservingly from the unit square onto the triangle.
    index = np.arange(count)
    run_start = np.maximum.accumulate(np.where(np.diff(faces, prepend=-1) != 0, index, 0))
    uv = (rng.random((count, 2))[run_start] + (index - run_start)[:, None] * _R2_STEP) % 1.0
    root = np.sqrt(uv[:, 0])
    bary = np.column_stack([1.0 - root, root * (1.0 - uv[:, 1]), root * uv[:, 1]])
    points = np.einsum("nc,ncd->nd", bary, corners[faces])
    normals = cross[faces] / np.maximum(np.linalg.norm(cross[faces], axis=1, keepdims=True), 1e-30)
    colors = np.einsum("nc,ncd->nd", bary, mesh.vertex_colors[mesh.faces[faces]].astype(np.float64) / 255.0)

    spacing = _local_spacing(points, ideal=np.sqrt(total / count))
    return SurfaceSamples(
        points=points.astype(np.float32),
        normals=normals.astype(np.float32),
        colors=np.clip(colors, 0.0, 1.0).astype(np.float32),
        spacing=spacing.astype(np.float32),
    )


def _quaternions_to_normals(normals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quaternions (N, 4) (w, x, y, z) rotating local +z onto each unit normal (N, 3).

    The shortest arc, composed with a random turn about local z: disks are round in-plane so
    the turn changes nothing rendered, but it keeps rotations varied even on a flat mesh (the
    validators reject a splat whose quaternions are all identity).
    """
    n = normals.astype(np.float64)
    arc = np.column_stack([1.0 + n[:, 2], -n[:, 1], n[:, 0], np.zeros(len(n))])
    # A normal along -z has no unique shortest arc: any half turn about a horizontal axis works.
    arc[n[:, 2] < -1.0 + 1e-9] = (0.0, 1.0, 0.0, 0.0)
    arc /= np.linalg.norm(arc, axis=1, keepdims=True)
    half_turn = 0.5 * rng.uniform(0.0, 2.0 * np.pi, len(n))
    twist = np.column_stack([np.cos(half_turn), np.zeros(len(n)), np.zeros(len(n)), np.sin(half_turn)])
    return quaternion_multiply(arc, twist)


def gaussians_from_samples(
    samples: SurfaceSamples,
    colors: np.ndarray | None = None,
    opacity: float = 0.99,
    seed: int = 0,
) -> Gaussians:
    """Flat disks on the surface, one per sample.

    Args:
        samples: surface samples (N).
        colors: (N, 3) RGB in [0, 1] overriding ``samples.colors`` (e.g. colour-field queries
            at ``samples.points``); None keeps the mesh's vertex colours.
        opacity: opacity of every disk as a probability in (0, 1); stored as its logit.
        seed: seed of the in-plane twist of the quaternions.

    Returns:
        ``Gaussians`` in the samples' frame: log-scales log(0.7 s) in-plane and log(0.035 s) along the normal
        for local spacing s, ``f_dc = (rgb - 0.5) / C0``.

    Raises:
        ValueError: ``colors`` has the wrong shape or non-finite values, or ``opacity`` is not
            in (0, 1).
    """
    n = len(samples)
    rgb = samples.colors if colors is None else np.asarray(colors, dtype=np.float32)
    if rgb.shape != (n, 3) or not np.isfinite(rgb).all():
        raise ValueError(f"colors: expected finite ({n}, 3) RGB in [0, 1], got shape {rgb.shape}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity: expected a probability in (0, 1), got {opacity}")
    sigma = DISK_SIGMA_PER_SPACING * samples.spacing.astype(np.float64)
    log_scales = np.log(np.column_stack([sigma, sigma, DISK_THICKNESS * sigma]))
    rotations = _quaternions_to_normals(samples.normals, np.random.default_rng(seed))
    return Gaussians(
        means=samples.points.astype(np.float32),
        f_dc=((np.clip(rgb, 0.0, 1.0) - 0.5) / SH_C0).astype(np.float32),
        opacity=np.full(n, np.log(opacity / (1.0 - opacity)), dtype=np.float32),
        log_scales=log_scales.astype(np.float32),
        rotations=rotations.astype(np.float32),
    )


def mesh_to_gaussians(mesh: MeshAsset, count: int, seed: int = 0) -> Gaussians:
    """``gaussians_from_samples(sample_surface(mesh, count, seed))`` with vertex colours."""
    return gaussians_from_samples(sample_surface(mesh, count, seed), seed=seed)
