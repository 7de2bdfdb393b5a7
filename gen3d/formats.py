"""One home per output format: media type, extension, what ``image_to_3d`` must produce, writer.

A request names a format (``glb``, ``obj``, ``ply``, ``splat``) and, for meshes, a texture mode
(``vertex`` colours or a ``uv`` atlas). Everything downstream asks this registry instead of
testing format names: the edge validates against it, the pipeline reads ``product`` and
``needs_bake``, and the export stage calls one of ``writers``.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gen3d.mesh.files import write_textured_mesh, write_vertex_color_mesh
from gen3d.orientation import UpAxis, orient_gaussians
from gen3d.splat.normalise import normalise_gaussians
from gen3d.splat.ply import write_splat_ply

#: Output file formats: three mesh formats and the Gaussian-splat PLY.
OutputFormat = Literal["glb", "obj", "ply", "splat"]
#: How a mesh carries colour: per-vertex colours or a baked UV texture atlas.
TextureMode = Literal["vertex", "uv"]
#: What ``image_to_3d`` hands on: a mesh, or surface gaussians sampled from it.
Product = Literal["mesh", "gaussians"]

#: Request ranges of the mesh options (also in the OpenAPI schema and ``GET /version``).
FACES_RANGE = (1_000, 500_000)
TEXTURE_SIZES = (256, 512, 1024, 2048)
RESOLUTION_RANGE = (32, 512)


def auto_resolution(faces: int, cap: int) -> int:
    """The marching grid for a face target when a request names none.

    About 0.7 sqrt(faces) points per axis, a multiple of 32, at least 96: the grid then holds
    1.5-2.5 times the target's faces (3 faces per grid point squared on a sphere), so decimation
    keeps its accuracy (Chamfer 0.006 % of the extent at 30k faces from a 128 grid, 0.004 % from
    256) while the decimation's cost, which follows its input, stays small: 16 ms from 128
    against 29 ms from 160 for 30k faces on one core (``scripts/bench_mesh.py``). TripoSR's 64x64
    triplane has no detail finer than 1/64 of its box, so 128 samples it twice. Never above
    ``cap``, the preset's ``mc_resolution``.
    """
    return min(max(32 * math.ceil(0.7 * math.sqrt(faces) / 32), 96), cap)


@dataclass(frozen=True)
class MeshOptions:
    """Per-request mesh settings, already validated at the edge.

    Attributes:
        faces: target triangle count; meshes with more are decimated to it.
        texture: ``vertex`` colours or a baked ``uv`` atlas.
        texture_size: side of the square atlas in texels (``uv`` only).
        resolution: marching-cubes grid points per axis (``auto_resolution`` of ``faces`` unless
            the request names one).
        normalize: centre the mesh and scale its largest side to 1 (within ±0.5); False keeps
            TripoSR's scale (±0.87).
    """

    faces: int
    texture: TextureMode
    texture_size: int
    resolution: int
    normalize: bool


@dataclass(frozen=True)
class MeshLimits:
    """What a request's mesh options may ask for on one service: its preset narrows the global ranges.

    Attributes:
        max_resolution: largest marching grid a request may name (at most ``RESOLUTION_RANGE[1]``);
            the grid's cost grows with its cube, so a CPU preset keeps it small.
        texture_sizes: atlas sides a request may name (a subset of ``TEXTURE_SIZES``).
    """

    max_resolution: int = RESOLUTION_RANGE[1]
    texture_sizes: tuple[int, ...] = TEXTURE_SIZES


@dataclass(frozen=True)
class FileKind:
    """What a written file is: its media type and extension (no dot)."""

    media_type: str
    extension: str


#: Writes a model-frame asset as file bytes; meshes are always +Y up and ignore ``up``, splats
#: are always normalised and ignore ``normalize``.
Writer = Callable[[Any, UpAxis, bool], bytes]


def mesh_writer(fmt: str, textured: bool) -> Writer:
    """The writer of a mesh file format, for vertex colours or a baked texture."""

    writer = write_textured_mesh if textured else write_vertex_color_mesh

    def write(mesh: Any, up: UpAxis, normalize: bool) -> bytes:
        return writer(mesh, fmt, normalize=normalize)

    return write


def write_splat(gaussians: Any, up: UpAxis, normalize: bool) -> bytes:
    """A validator splat PLY: oriented for ``up``, centred, largest side 1."""
    return write_splat_ply(normalise_gaussians(orient_gaussians(gaussians, up)))


@dataclass(frozen=True)
class Format:
    """One output format.

    Attributes:
        name: the request's ``format`` value.
        product: what ``image_to_3d`` must produce for it.
        files: file kind per texture mode the format supports (splats: keyed ``vertex``, as
            their colour lives on each gaussian).
        writers: the writer per texture mode, same keys as ``files``.
    """

    name: OutputFormat
    product: Product
    files: dict[TextureMode, FileKind]
    writers: dict[TextureMode, Writer]

    def supports(self, texture: TextureMode) -> bool:
        return texture in self.files

    def file_kind(self, texture: TextureMode) -> FileKind:
        """The file this format writes in ``texture`` mode; ValueError if it has none."""
        if texture not in self.files:
            raise ValueError(f"format {self.name} does not support texture {texture!r}")
        return self.files[texture]


GLB = FileKind("model/gltf-binary", "glb")

FORMATS: dict[str, Format] = {
    "glb": Format(
        "glb", "mesh", {"vertex": GLB, "uv": GLB}, {"vertex": mesh_writer("glb", False), "uv": mesh_writer("glb", True)}
    ),
    # A textured OBJ is three files (.obj, .mtl, texture): they travel as one zip.
    "obj": Format(
        "obj",
        "mesh",
        {"vertex": FileKind("model/obj", "obj"), "uv": FileKind("application/zip", "zip")},
        {"vertex": mesh_writer("obj", False), "uv": mesh_writer("obj", True)},
    ),
    "ply": Format("ply", "mesh", {"vertex": FileKind("application/ply", "ply")}, {"vertex": mesh_writer("ply", False)}),
    "splat": Format("splat", "gaussians", {"vertex": FileKind("application/octet-stream", "ply")}, {"vertex": write_splat}),
}


def get_format(name: str) -> Format:
    """The registry entry for ``name``; ValueError naming the known formats otherwise."""
    if name not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {name!r}")
    return FORMATS[name]


def needs_bake(fmt: Format, mesh: MeshOptions | None) -> bool:
    """Whether the request needs a texture baked from the colour field (a ``uv`` mesh)."""
    return fmt.product == "mesh" and mesh is not None and mesh.texture == "uv"
