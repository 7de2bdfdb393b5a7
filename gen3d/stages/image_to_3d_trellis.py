"""``image_to_3d`` with TRELLIS-image-large: prepared image -> FlexiCubes mesh with vertex colours,
its own Gaussians for a splat, and a texture baked from the full mesh's colours.

The reference exports its GLB by rendering 100 views and optimising a texture for 2,500 steps.
Here the bake is the one TripoSR's meshes get: the decimated mesh is unwrapped on the GPU, and each
texel takes the colour of the full-resolution FlexiCubes surface at its point (``ColorGrid``).

Frames: TRELLIS decodes z up with the object's front toward -y; the official GLB export maps
(x, y, z) to (x, z, -y). Our model frame is z up with the front toward +x, so the stage turns
TRELLIS's output by ``MODEL_FROM_TRELLIS`` and every export then matches the official orientation.

In the random-weight modes a planted shape decides the occupancy and the mesh's distance signs
(``gen3d.models.trellis.planted``): ``tiny`` lifts the input's silhouette (demos differ by input),
``random`` a sphere shell of real-object size (timing). Outputs are then demos, labelled as such.
"""

import logging

import numpy as np
import torch

from gen3d.config import ImageTo3DConfig
from gen3d.errors import StageOutputError
from gen3d.mesh.charts import connected_labels
from gen3d.mesh.color_grid import ColorGrid
from gen3d.mesh.prepare import texture
from gen3d.models.trellis.config import TrellisConfig
from gen3d.models.trellis.pipeline import IMAGE_SIZE, TrellisImageTo3D, TrellisOutput
from gen3d.models.trellis.speed import speed_up_
from gen3d.orientation import rotate_gaussians, rotate_mesh
from gen3d.results import (
    Asset3D,
    Gaussians,
    MeshAsset,
    Remeshed,
    SurfaceColors,
    TexturedMesh,
)
from gen3d.stages.image_to_3d_base import (
    ImageTo3D,
    ShapeRequest,
    image_tensor,
    warm_up_image,
)

logger = logging.getLogger(__name__)

#: TRELLIS's frame (z up, front -y) -> our model frame (z up, front +x): (x, y, z) -> (-y, x, z).
MODEL_FROM_TRELLIS = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def outward_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The faces of the components that enclose positive volume, on the mesh's device.

    TRELLIS's structure is a shell of voxels around the surface. Grid corners inside the shell that
    no voxel touches count as outside, so FlexiCubes also meshes the shell's inner wall: a second,
    inward-facing surface (negative signed volume) hidden inside the object. The reference removes
    it in its GLB export by rendering views; here each connected component whose signed volume is
    negative is dropped, which keeps every surface that can be seen from outside.

    Args:
        vertices: [V, 3] float.
        faces: [F, 3] int64, counter-clockwise seen from outside.
    """
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]]])
    _, label = connected_labels(edges, vertices.shape[0])
    component = label[faces[:, 0]]
    tri = vertices.double()[faces]
    volume = torch.linalg.cross(tri[:, 1], tri[:, 2]).mul(tri[:, 0]).sum(1) / 6.0
    enclosed = torch.zeros(vertices.shape[0], dtype=torch.float64, device=vertices.device).index_add_(0, component, volume)
    return faces[enclosed[component] > 0]


def to_mesh_asset(output: TrellisOutput) -> MeshAsset:
    """The decoded mesh as a ``MeshAsset`` in our model frame, vertex colours as uint8, inner walls
    of the voxel shell dropped (``outward_faces``).

    Raises:
        StageOutputError: no occupied voxel, no surface, or non-finite vertices.
    """
    mesh = output.mesh
    if mesh is None or mesh.is_empty:
        raise StageOutputError(f"TRELLIS decoded no surface ({output.coords.shape[0]} occupied voxels)")
    faces = outward_faces(mesh.vertices, mesh.faces)
    if faces.shape[0] == 0:
        raise StageOutputError("TRELLIS's mesh encloses no volume")
    # Only the vertices the kept faces use: the bake's colour samples must not include the inner wall.
    used, faces = torch.unique(faces, return_inverse=True)
    vertices = mesh.vertices[used].float().cpu().numpy()
    if not np.isfinite(vertices).all():
        raise StageOutputError("TRELLIS's mesh has non-finite vertices")
    colors = mesh.colors[used] if mesh.colors is not None else torch.full((used.shape[0], 3), 0.5)
    rgb = (colors.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    asset = MeshAsset(vertices, faces.cpu().numpy().astype(np.int64), rgb)
    return rotate_mesh(asset, MODEL_FROM_TRELLIS)


def to_splat_gaussians(output: TrellisOutput) -> Gaussians:
    """TRELLIS's own Gaussians in the validators' parameterisation, our model frame."""
    if output.gaussians is None or len(output.gaussians) == 0:
        raise StageOutputError(f"TRELLIS decoded no gaussians ({output.coords.shape[0]} occupied voxels)")
    fields = {name: value.float().cpu().numpy() for name, value in output.gaussians.splat_fields().items()}
    if not all(np.isfinite(value).all() for value in fields.values()):
        raise StageOutputError("TRELLIS's gaussians are not finite")
    return rotate_gaussians(Gaussians(**fields), MODEL_FROM_TRELLIS)


class TrellisImageTo3DStage(ImageTo3D[TrellisImageTo3D]):
    """TRELLIS on one device: conditioning image (518 px, black backdrop) -> ``Asset3D``; bakes."""

    @classmethod
    def build(cls, cfg: ImageTo3DConfig, dtype: torch.dtype, device: torch.device) -> "TrellisImageTo3DStage":
        """Load the release (``real``) or build random weights with a planted shape (``tiny``/``random``)."""
        files = cfg.trellis
        if cfg.mode == "real":
            model = TrellisImageTo3D.from_pretrained(
                repo=files.repo, revision=files.revision, conditioner_repo=files.conditioner_repo,
                conditioner_revision=files.conditioner_revision, sha256=dict(files.sha256), dtype=dtype, device=device,
            )  # fmt: skip
        else:
            architecture = TrellisConfig.tiny() if cfg.mode == "tiny" else TrellisConfig.official()
            torch.manual_seed(0)
            plant = "silhouette" if cfg.mode == "tiny" else "sphere"
            model = TrellisImageTo3D.from_config(architecture, dtype=dtype, device=device, plant=plant)
            logger.warning("image_to_3d: %s TRELLIS with random weights and a planted %s (demo output)", cfg.mode, plant)
        speed_up_(model, compile_blocks=files.compile, cuda_graphs=files.cuda_graphs, attention_backends=files.attention)
        logger.info("image_to_3d: %s TRELLIS (%s) on %s", cfg.mode, cfg.precision, device)
        return cls(model, cfg, device)

    @property
    def cond_size(self) -> int:
        return IMAGE_SIZE

    @torch.inference_mode()
    def generate(self, image: np.ndarray, request: ShapeRequest) -> Asset3D:
        """Lift one prepared image: FlexiCubes mesh, plus TRELLIS's gaussians for a splat.

        Args:
            image: (518, 518, 3) uint8, object premultiplied on black (the background stage's
                TRELLIS framing).
            request: product, seed and sampler options; ``resolution`` does not apply (the mesh
                decoder's grid is 256^3).
        """
        if image.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"image: TRELLIS expects {IMAGE_SIZE} px from the background stage, got {image.shape}")
        flow, steps = request.flow, self.cfg.trellis.steps
        output = self.model.run(
            image_tensor(image, self.device).permute(2, 0, 1),
            seed=request.seed,
            structure_steps=flow.ss_steps or steps,
            latent_steps=flow.slat_steps or steps,
            structure_cfg=flow.ss_cfg,
            latent_cfg=flow.slat_cfg,
            mesh=True,
            gaussians=request.product == "gaussians",
        )
        mesh = to_mesh_asset(output)
        gaussians = to_splat_gaussians(output) if request.product == "gaussians" else None
        # The same arrays as the mesh's: pickling shares them, so nothing crosses the object store twice.
        colors = SurfaceColors(mesh.vertices, mesh.vertex_colors) if request.keep_color_field else None
        return Asset3D(mesh, gaussians, colors)

    @torch.inference_mode()
    def bake(self, remeshed: Remeshed) -> TexturedMesh:
        """Unwrap ``remeshed.mesh`` and bake the full mesh's vertex colours into its atlas."""
        source = remeshed.color_field
        if not isinstance(source, SurfaceColors):
            raise TypeError(f"bake: TRELLIS bakes from SurfaceColors, got {type(source).__name__}")
        points = torch.from_numpy(source.points).to(self.device)
        colors = torch.from_numpy(source.colors).to(self.device).float() / 255.0
        field = ColorGrid.from_samples(points, colors, resolution=self.model.cfg.mesh_decoder.resolution * 4)
        return texture(remeshed.mesh, field, remeshed.texture_size, self.device)

    def warmup(self) -> None:
        """A full pass (mesh, gaussians, a bake), so the first request pays no allocation cost."""
        request = ShapeRequest("gaussians", 0, keep_color_field=True)
        self.generate(warm_up_image(IMAGE_SIZE, backdrop=0), request)
