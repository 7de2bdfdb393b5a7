"""The ``export`` stage (CPU): decimate and clean meshes, then write the file (the unwrap runs in the GPU bake).

Orientation (see ``gen3d.orientation``): assets arrive in the model frame (z up, front +x).
Mesh files are always written +Y up with the front toward +Z, glTF's convention, and, unless a
request says ``normalize: false``, centred with their largest side 1 (the unit cube, as
404-GEN's GLB rules want). ``up`` applies to splats only, where "+y" suits three-gen-subnet
validators and "-y" the 404-gen-subnet / 3DGS viewers. Splats are centred and scaled so the
largest side is 1.
"""

import logging

import numpy as np

from gen3d.config import ExportConfig
from gen3d.errors import StageOutputError
from gen3d.formats import MeshOptions, OutputFormat, get_format
from gen3d.mesh.decimate import decimate
from gen3d.mesh.decimate_chunks import ChunkedDecimator
from gen3d.mesh.prepare import Decimator, simplify
from gen3d.orientation import UpAxis
from gen3d.results import (
    Asset3D,
    ExportedFile,
    Gaussians,
    MeshAsset,
    Remeshed,
    TexturedMesh,
)
from gen3d.splat.from_mesh import mesh_to_gaussians
from gen3d.splat.validate import MIN_SPLAT_COUNT

logger = logging.getLogger(__name__)


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


def surface(mesh: MeshAsset, faces: int, decimator: Decimator = decimate) -> MeshAsset:
    """The mesh a file gets: decimated to ``faces`` when it has more, then cleaned (no floaters
    or degenerate faces, outward winding). Decimating first leaves the clean-up fewer faces
    (a tenth from grid 256, about half from the grid of ``auto_resolution``), and it removes the few zero-area faces decimation leaves behind."""
    check_mesh(mesh)
    result = simplify(mesh, faces, decimator=decimator)
    if len(result.faces) == 0:
        raise StageOutputError("no surface left after removing degenerate faces and floaters")
    return result


class Exporter:
    """Writes assets as files; stateless apart from its config.

    Args:
        cfg: export settings (``splat_count`` for meshes exported as splats, ``decimate_workers``).
    """

    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg
        self.decimator: Decimator = (
            ChunkedDecimator(cfg.decimate_workers, cfg.chunked_above) if cfg.decimate_workers >= 2 else decimate
        )

    @classmethod
    def from_config(cls, cfg: ExportConfig) -> "Exporter":
        """Build the stage (no weights involved)."""
        logger.info("export: mesh files and splats on the CPU")
        return cls(cfg)

    def remesh(self, asset: Asset3D, mesh: MeshOptions) -> Remeshed:
        """Decimate and clean ``asset.mesh`` for a texture bake from ``asset.color_field``.

        The unwrap is left to the bake, on the GPU: it took more CPU time than the decimation.
        """
        if asset.color_field is None:
            raise ValueError("remesh: the asset carries no colour field (image_to_3d was not asked to keep it)")
        return Remeshed(surface(asset.mesh, mesh.faces, self.decimator), mesh.texture_size, asset.color_field)

    def export(
        self, asset: Asset3D | MeshAsset | TexturedMesh, fmt: OutputFormat, up: UpAxis, mesh: MeshOptions | None
    ) -> ExportedFile:
        """Serialise ``asset`` (model frame) as ``fmt``.

        Args:
            asset: ``image_to_3d``'s result (its mesh, or its gaussians for a splat), a baked
                ``TexturedMesh``, or a bare mesh (sampled into ``splat_count`` gaussians for a splat).
            fmt: a key of ``gen3d.formats.FORMATS``.
            up: splat up-axis convention; mesh files are always +Y up.
            mesh: the request's mesh options (None for a splat).

        Raises:
            StageOutputError: an empty or non-finite asset.
        """
        entry = get_format(fmt)
        if entry.product == "gaussians":
            texture, source = "vertex", self._gaussians(asset)
        elif mesh is None:
            raise ValueError(f"export: format {fmt} needs mesh options")
        elif isinstance(asset, TexturedMesh):
            texture, source = "uv", asset
        else:
            texture, source = "vertex", surface(self._mesh_of(asset), mesh.faces, self.decimator)
        kind = entry.file_kind(texture)
        data = entry.writers[texture](source, up, mesh.normalize if mesh is not None else True)
        faces = None if entry.product == "gaussians" else len(source.faces)
        return ExportedFile(data, kind.media_type, kind.extension, faces)

    def close(self) -> None:
        """Stop the chunked decimation's processes, if any ran."""
        if isinstance(self.decimator, ChunkedDecimator):
            self.decimator.close()

    @staticmethod
    def _mesh_of(asset: Asset3D | MeshAsset) -> MeshAsset:
        return asset.mesh if isinstance(asset, Asset3D) else asset

    def _gaussians(self, asset: Asset3D | MeshAsset | TexturedMesh) -> Gaussians:
        """The asset's gaussians, or ``splat_count`` of them sampled on its mesh; checked."""
        gaussians = asset.gaussians if isinstance(asset, Asset3D) else None
        if gaussians is None:
            source = self._mesh_of(asset)
            check_mesh(source)
            gaussians = mesh_to_gaussians(source, self.cfg.splat_count)
        check_gaussians(gaussians)
        if len(gaussians) < MIN_SPLAT_COUNT:
            logger.warning("splat has %d gaussians; validators reject fewer than %d", len(gaussians), MIN_SPLAT_COUNT)
        return gaussians
