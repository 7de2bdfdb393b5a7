"""The ``export`` stage: model-frame assets -> file bytes (GLB/OBJ/PLY mesh or a splat PLY).

Orientation (see ``gen3d.orientation``): assets arrive in the model frame (z up, front +x).
Mesh files are always written +Y up with the front toward +Z, glTF's convention (a GLB must be
y-up; OBJ/PLY follow it so that every viewer shows them upright); ``up`` applies to splats only,
where "+y" suits three-gen-subnet validators and "-y" the 404-gen-subnet / 3DGS viewers. Splats
are then centred (bounding box at the origin) and scaled so the largest side is 1.
"""

import logging
import time

import numpy as np
import trimesh

from gen3d.config import MIN_SPLAT_COUNT, ExportConfig, OutputFormat, UpAxis
from gen3d.errors import InputError, StageOutputError
from gen3d.orientation import check_up, orient_gaussians, orient_mesh
from gen3d.results import ExportedFile, Gaussians, MeshAsset
from gen3d.splat.from_mesh import mesh_to_gaussians
from gen3d.splat.normalise import normalise_gaussians
from gen3d.splat.ply import write_splat_ply

logger = logging.getLogger(__name__)

#: format -> (media type, file extension)
FORMATS: dict[str, tuple[str, str]] = {
    "glb": ("model/gltf-binary", "glb"),
    "obj": ("model/obj", "obj"),
    "ply": ("application/ply", "ply"),
    "splat": ("application/octet-stream", "ply"),
}


def check_mesh(mesh: MeshAsset) -> None:
    """Raise ``StageOutputError`` for a mesh that must not be written (empty, NaN, bad indices)."""
    if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise StageOutputError(f"empty mesh ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)")
    if not np.isfinite(mesh.vertices).all():
        raise StageOutputError("mesh has non-finite vertex positions")
    if mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices):
        raise StageOutputError(f"face indices outside [0, {len(mesh.vertices)})")
    if mesh.vertex_colors.shape != mesh.vertices.shape:
        raise StageOutputError(f"vertex_colors shape {mesh.vertex_colors.shape} != vertices {mesh.vertices.shape}")


def check_gaussians(g: Gaussians) -> None:
    """Raise ``StageOutputError`` for an empty splat or one with non-finite values."""
    if len(g) == 0:
        raise StageOutputError("no gaussians to export")
    for name in ("means", "f_dc", "opacity", "log_scales", "rotations"):
        if not np.isfinite(getattr(g, name)).all():
            raise StageOutputError(f"gaussians.{name} has non-finite values")


def decimate(mesh: MeshAsset, max_faces: int) -> MeshAsset:
    """Vertex clustering: merge vertices per grid cell, coarsening the grid until <= ``max_faces``.

    Crude but dependency-free (quadric decimation in trimesh needs an extra package); merged
    vertices take the mean position and colour of their cell.
    """
    lo = mesh.vertices.min(axis=0)
    cell = float((mesh.vertices.max(axis=0) - lo).max()) / 256.0
    faces, current = mesh.faces, mesh
    while len(faces) > max_faces:
        keys = np.floor((mesh.vertices - lo) / cell).astype(np.int64)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        vertices = np.stack([np.bincount(inverse, mesh.vertices[:, i]) for i in range(3)], 1) / counts[:, None]
        colors = np.stack([np.bincount(inverse, mesh.vertex_colors[:, i]) for i in range(3)], 1) / counts[:, None]
        faces = inverse[mesh.faces]
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
        faces = np.unique(faces, axis=0)
        current = MeshAsset(vertices.astype(np.float32), faces.astype(np.int64), np.round(colors).astype(np.uint8))
        cell *= 1.5
    return current


class Exporter:
    """Writes assets as files; stateless apart from its config.

    Args:
        cfg: export settings (``max_faces`` decimation, ``splat_count`` for meshes exported as
            splats).
    """

    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: ExportConfig) -> "Exporter":
        """Build the stage (no weights involved)."""
        return cls(cfg)

    def export(self, asset: MeshAsset | Gaussians, fmt: OutputFormat, up: UpAxis = "+y") -> ExportedFile:
        """Serialise ``asset`` (model frame) as ``fmt``.

        Args:
            asset: a mesh (any format; sampled into ``splat_count`` gaussians for ``splat``) or
                gaussians (``splat`` only).
            fmt: ``glb``, ``obj``, ``ply`` (mesh files) or ``splat`` (validator splat PLY).
            up: splat up-axis convention, ``+y`` or ``-y``; mesh files are always +Y up.

        Returns:
            ``ExportedFile`` with bytes, media type, extension and wall time.

        Raises:
            InputError: unknown ``fmt``/``up``, or gaussians asked for as a mesh format.
            StageOutputError: empty or non-finite asset.
        """
        start = time.perf_counter()
        if fmt not in FORMATS:
            raise InputError("format", f"expected one of {list(FORMATS)}, got {fmt!r}")
        check_up(up)
        data = self._splat_bytes(asset, up) if fmt == "splat" else self._mesh_bytes(asset, fmt)
        media_type, extension = FORMATS[fmt]
        return ExportedFile(data=data, media_type=media_type, extension=extension, seconds=time.perf_counter() - start)

    def _mesh_bytes(self, asset: MeshAsset | Gaussians, fmt: str) -> bytes:
        if not isinstance(asset, MeshAsset):
            raise InputError("format", f"{fmt} needs a mesh, got {type(asset).__name__}; use 'splat' for gaussians")
        check_mesh(asset)
        mesh = asset
        if self.cfg.max_faces is not None and len(mesh.faces) > self.cfg.max_faces:
            mesh = decimate(mesh, self.cfg.max_faces)
            logger.info("decimated %d -> %d faces", len(asset.faces), len(mesh.faces))
        mesh = orient_mesh(mesh, "+y")
        alpha = np.full((len(mesh.vertices), 1), 255, dtype=np.uint8)
        tm = trimesh.Trimesh(
            vertices=mesh.vertices.astype(np.float64),
            faces=mesh.faces,
            vertex_colors=np.concatenate([mesh.vertex_colors.astype(np.uint8), alpha], axis=1),
            process=False,
        )
        data = tm.export(file_type=fmt)
        return data.encode("utf-8") if isinstance(data, str) else data

    def _splat_bytes(self, asset: MeshAsset | Gaussians, up: UpAxis) -> bytes:
        if isinstance(asset, MeshAsset):
            check_mesh(asset)
            asset = mesh_to_gaussians(asset, self.cfg.splat_count)
        check_gaussians(asset)
        if len(asset) < MIN_SPLAT_COUNT:
            logger.warning("splat has %d gaussians; validators reject fewer than %d", len(asset), MIN_SPLAT_COUNT)
        return write_splat_ply(normalise_gaussians(orient_gaussians(asset, up)))
