"""How closely a surface splat reproduces its mesh in the validators' renders.

The mesh goes through the exact export path of a splat (model frame -> "+y" -> unit box ->
PLY bytes -> parsed back -> validators' normalisation); the mesh itself gets the same rotation
and similarity so both line up. Then both are rendered with the validators' cameras and
compared: silhouette IoU (coverage > 0.5) and colour PSNR over the mesh's pixels.
"""

import time
from dataclasses import dataclass

import numpy as np
import trimesh

from gen3d.orientation import orient_gaussians, orient_mesh
from gen3d.results import MeshAsset
from gen3d.splat.from_mesh import mesh_to_gaussians
from gen3d.splat.normalise import fit_box, transform_gaussians
from gen3d.splat.ply import read_splat_ply, write_splat_ply
from gen3d.splat.render import (
    Camera,
    psnr,
    render_mesh,
    render_splat,
    silhouette_iou,
    validator_scene,
)


@dataclass(frozen=True)
class Agreement:
    """Mesh-vs-splat comparison of one mesh at one splat count.

    Attributes:
        count: gaussians in the splat.
        iou: per-view silhouette IoU, one per camera.
        psnr: per-view colour PSNR (dB) over the mesh's covered pixels.
        file_bytes: size of the splat PLY.
        seconds: wall time of sampling + export (rendering excluded).
    """

    count: int
    iou: list[float]
    psnr: list[float]
    file_bytes: int
    seconds: float

    @property
    def mean_iou(self) -> float:
        """Mean IoU over views."""
        return float(np.mean(self.iou))

    @property
    def mean_psnr(self) -> float:
        """Mean PSNR over views (dB)."""
        return float(np.mean(self.psnr))


def _colour_by_position(mesh: trimesh.Trimesh) -> MeshAsset:
    """MeshAsset whose vertex colours ramp with position (R along x, G along y, B along z)."""
    v = mesh.vertices
    rgb = (v - v.min(axis=0)) / np.maximum(v.max(axis=0) - v.min(axis=0), 1e-9)
    return MeshAsset(
        vertices=v.astype(np.float32),
        faces=mesh.faces.astype(np.int64),
        vertex_colors=np.round(40 + 200 * rgb).astype(np.uint8),
    )


def procedural_solids() -> dict[str, MeshAsset]:
    """Test solids in the model frame (z up), position-coloured.

    ``sphere``, ``box``, ``torus`` and two non-convex ones: ``l_shape`` (two boxes, an upright
    post on a long base) and ``ring`` (a thick open tube whose inner wall shows from above).
    """
    base = trimesh.creation.box(extents=(1.2, 0.4, 0.3))
    post = trimesh.creation.box(extents=(0.4, 0.4, 0.9))
    post.apply_translation((-0.4, 0.0, 0.6))
    ring = trimesh.creation.annulus(r_min=0.35, r_max=0.55, height=0.5)
    meshes = {
        "sphere": trimesh.creation.icosphere(subdivisions=4, radius=0.6),
        "box": trimesh.creation.box(extents=(1.0, 0.7, 0.5)),
        "torus": trimesh.creation.torus(major_radius=0.45, minor_radius=0.18),
        "l_shape": trimesh.util.concatenate([base, post]),
        "ring": ring,
    }
    return {name: _colour_by_position(mesh) for name, mesh in meshes.items()}


def measure_agreement(mesh: MeshAsset, count: int, cameras: list[Camera], seed: int = 0) -> Agreement:
    """Sample ``count`` gaussians on ``mesh``, export them as a "+y" splat and compare renders."""
    start = time.perf_counter()
    oriented = orient_gaussians(mesh_to_gaussians(mesh, count, seed), "+y")
    fit = fit_box(oriented.means)
    data = write_splat_ply(transform_gaussians(oriented, fit))
    seconds = time.perf_counter() - start

    scene = validator_scene(read_splat_ply(data))
    vertices = scene.fit.apply(fit.apply(orient_mesh(mesh, "+y").vertices))
    colors = mesh.vertex_colors.astype(np.float64) / 255.0
    ious, psnrs = [], []
    for camera in cameras:
        splat = render_splat(scene, camera)
        reference = render_mesh(vertices, mesh.faces, colors, camera)
        ious.append(silhouette_iou(splat.alpha, reference.alpha))
        psnrs.append(psnr(splat.rgb, reference.rgb, mask=reference.alpha > 0.5))
    return Agreement(count=count, iou=ious, psnr=psnrs, file_bytes=len(data), seconds=seconds)

