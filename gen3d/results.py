"""Frozen results passed between stages. Arrays are numpy so they cross process boundaries cheaply.

Results carry no timings: the deployment runtime times every stage call once
(``deployments._runtime.StageRuntime``) and ``Traced`` carries those seconds to the client.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GeneratedImage:
    """Output of ``text_to_image``.

    Attributes:
        image: (H, W, 3) uint8 RGB.
    """

    image: np.ndarray


@dataclass(frozen=True)
class PreparedImage:
    """Output of ``background``: the TripoSR conditioning image.

    Attributes:
        image: (S, S, 3) uint8 RGB, object centred on grey 0.5, filling ``foreground_ratio``.
        removed_background: whether rembg ran (False when the input already had transparency).
        cutout: (S, S, 4) uint8 RGBA, the same framing with the background transparent; only
            when the caller asked for it (the job API shows it), else None.
    """

    image: np.ndarray
    removed_background: bool
    cutout: np.ndarray | None = None


@dataclass(frozen=True)
class MeshAsset:
    """A triangle mesh in its 3D model's own frame: z up (TripoSR within ±0.87, TRELLIS ±0.5).

    Attributes:
        vertices: (V, 3) float32.
        faces: (F, 3) int64, counter-clockwise seen from outside (outward normals).
        vertex_colors: (V, 3) uint8 RGB.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray


@dataclass(frozen=True)
class UVMesh:
    """A mesh unwrapped into a texture atlas, model frame, before its texture is baked.

    Attributes:
        vertices: (V, 3) float32; seam vertices are split, so one vertex has one UV.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        uvs: (V, 2) float32 in [0, 1], glTF convention (u right, v down from the image's top row).
        texture_size: side of the square atlas the UVs were packed for, in texels.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texture_size: int


@dataclass(frozen=True)
class TexturedMesh:
    """A ``UVMesh`` with its baked colour texture, model frame.

    Attributes:
        vertices: (V, 3) float32.
        faces: (F, 3) int64.
        uvs: (V, 2) float32 in [0, 1], glTF convention.
        texture: (T, T, 3) uint8 RGB base colour, islands dilated into the gutters.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class SurfaceColors:
    """Coloured samples of a full-resolution surface, the bake's source where a model has no
    colour field to query (TRELLIS colours its mesh's vertices, and decimation drops most of them).

    Attributes:
        points: (N, 3) float32, model frame.
        colors: (N, 3) uint8 RGB.
    """

    points: np.ndarray
    colors: np.ndarray


#: What a bake reads colours from: TripoSR's (3, C, H, W) float16 triplane scene code, whose colour
#: field is queried, or a TRELLIS mesh's ``SurfaceColors``.
ColorField = np.ndarray | SurfaceColors


@dataclass(frozen=True)
class Remeshed:
    """A clean, decimated mesh on its way to the bake, with what the bake needs.

    Attributes:
        mesh: the cleaned and decimated mesh, model frame; its colours are not used.
        texture_size: side of the square atlas to unwrap it into, in texels.
        color_field: where ``image_to_3d``'s bake reads colours (see ``ColorField``).
    """

    mesh: MeshAsset
    texture_size: int
    color_field: ColorField


@dataclass(frozen=True)
class Gaussians:
    """3D Gaussian splat in the validators' parameterisation, model frame (z up) until export.

    Attributes:
        means: (N, 3) float32 centres.
        f_dc: (N, 3) float32 SH degree-0 coefficients (rgb = 0.5 + C0 * f_dc).
        opacity: (N,) float32 logits.
        log_scales: (N, 3) float32 natural-log scales.
        rotations: (N, 4) float32 unit quaternions (w, x, y, z).
    """

    means: np.ndarray
    f_dc: np.ndarray
    opacity: np.ndarray
    log_scales: np.ndarray
    rotations: np.ndarray

    def __len__(self) -> int:
        return int(self.means.shape[0])


@dataclass(frozen=True)
class Asset3D:
    """Output of ``image_to_3d``: the mesh, plus gaussians when a splat was asked for.

    Attributes:
        mesh: the extracted mesh (marching cubes or FlexiCubes, not yet cleaned or decimated).
        gaussians: the splat's gaussians (TripoSR: sampled on the surface and coloured from its
            field; TRELLIS: its own decoded gaussians), or None.
        color_field: kept only when a texture will be baked later (``image_to_3d``'s ``bake``),
            else None; see ``ColorField``.
    """

    mesh: MeshAsset
    gaussians: Gaussians | None = None
    color_field: ColorField | None = None


@dataclass(frozen=True)
class ExportedFile:
    """Output of ``export``: file bytes ready to send.

    Attributes:
        data: the file.
        media_type: its MIME type.
        extension: file extension without dot (``glb``, ``obj``, ``ply``, ``zip``).
        faces: triangle count of a mesh file, None for a splat.
    """

    data: bytes
    media_type: str
    extension: str
    faces: int | None = None


@dataclass(frozen=True)
class Traced:
    """A stage result travelling through the graph with the seconds each stage took so far.

    Stages are chained without awaiting in between, so timings ride along with the data.

    Attributes:
        value: the latest stage's result.
        timings: stage name -> seconds, in pipeline order.
    """

    value: object
    timings: dict[str, float] = field(default_factory=dict)

    def then(self, stage: str, value: object, seconds: float) -> "Traced":
        """Return the next stage's result, with its timing appended."""
        return Traced(value, {**self.timings, stage: seconds})
