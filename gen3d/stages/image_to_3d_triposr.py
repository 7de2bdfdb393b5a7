"""``image_to_3d`` with TripoSR: prepared image -> scene code (triplane) -> mesh (+ surface gaussians),
and the texture bake that queries the scene code's colour field on the GPU.

In the random-weight modes (``tiny``, ``random``) the weights are random, so a surface is
planted in the field (``gen3d.models.triposr.planted``). The matrices keep their sizes and the FLOPs stay
the real ones. Meshes are then closed, object-like surfaces, so the timings of marching and
export are representative and the tests get valid files. Such outputs are demos and are
labelled as such.
"""

import logging

import numpy as np
import torch

from gen3d.config import ImageTo3DConfig
from gen3d.errors import StageOutputError
from gen3d.mesh.prepare import texture
from gen3d.models.triposr import TripoSR, TripoSRConfig
from gen3d.models.triposr.planted import plant_sphere_in_weights
from gen3d.models.triposr.planted_demo import plant_demo_in_weights
from gen3d.results import Asset3D, Remeshed, TexturedMesh
from gen3d.splat.from_mesh import gaussians_from_samples, sample_surface
from gen3d.stages.image_to_3d_base import (
    ImageTo3D,
    ShapeRequest,
    image_tensor,
    warm_up_image,
)

logger = logging.getLogger(__name__)


class TripoSRImageTo3D(ImageTo3D[TripoSR]):
    """TripoSR on one device: conditioning image -> ``Asset3D``; UV mesh -> baked texture."""

    @classmethod
    def build(cls, cfg: ImageTo3DConfig, dtype: torch.dtype, device: torch.device) -> "TripoSRImageTo3D":
        """Load (``real``) or build (``tiny``/``random``, with the planted demo surface) the model."""
        if cfg.mode == "real":
            model = TripoSR.from_pretrained(cfg.repo, revision=cfg.revision, sha256=cfg.sha256, dtype=dtype, device=device)
        else:
            arch = TripoSRConfig.tiny() if cfg.mode == "tiny" else TripoSRConfig.official()
            torch.manual_seed(0)
            model = TripoSR.from_config(arch, dtype=dtype, device=device)
            if cfg.mode == "tiny":
                plant_demo_in_weights(model)  # lifts the input's silhouette and colours: demos differ by input
            else:
                plant_sphere_in_weights(model)  # full size, for timing: the same sphere whatever the input
            logger.warning("image_to_3d: %s TripoSR with random weights and a planted field (demo output)", cfg.mode)
        logger.info("image_to_3d: %s TripoSR (%s) on %s", cfg.mode, cfg.precision, device)
        return cls(model.eval(), cfg, device)

    @property
    def cond_size(self) -> int:
        return self.model.cfg.cond_image_size

    @torch.inference_mode()
    def generate(self, image: np.ndarray, request: ShapeRequest) -> Asset3D:
        """Lift one prepared image to 3D.

        Args:
            image: (S, S, 3) uint8, as the ``background`` stage prepares it.
            request: what to produce (mesh resolution, gaussians, the scene code for a bake).

        Returns:
            ``Asset3D`` with the mesh in TripoSR's frame (z up), plus gaussians or the scene code
            as requested.
        """
        scene_code = self.model(image_tensor(image, self.device)[None])
        mesh = self.model.extract_mesh(
            scene_code, resolution=request.resolution, threshold=self.cfg.mc_threshold, chunk=self.cfg.query_chunk
        )
        gaussians = None
        if request.product == "gaussians":
            samples = sample_surface(mesh, self.cfg.splat_count, seed=request.seed)
            points = torch.from_numpy(samples.points).to(self.device)
            colors = self.model.query(scene_code, points, chunk=self.cfg.query_chunk)["color"].cpu().numpy()
            if not np.isfinite(colors).all():
                raise StageOutputError("colour field is not finite at the surface")
            gaussians = gaussians_from_samples(samples, colors=colors, seed=request.seed)
        kept = scene_code[0].to(torch.float16).cpu().numpy() if request.keep_color_field else None
        return Asset3D(mesh, gaussians, kept)

    @torch.inference_mode()
    def bake(self, remeshed: Remeshed) -> TexturedMesh:
        """Unwrap ``remeshed.mesh`` and bake the colour field of its scene code into its atlas.

        Both run on the stage's device. Each covered texel is coloured by querying the field at
        its surface point, so the texture holds detail between vertices that vertex colours cannot.
        """
        code = torch.from_numpy(remeshed.color_field).to(self.device)

        def color_fn(points: torch.Tensor) -> torch.Tensor:
            return self.model.query(code, points, chunk=self.cfg.query_chunk)["color"]

        return texture(remeshed.mesh, color_fn, remeshed.texture_size, self.device)

    def warmup(self) -> None:
        """A full pass (mesh and splat) so the first request pays no allocation or kernel-selection cost.

        The image holds an object (a disc on the grey backdrop): a plain grey image can give an
        empty surface, and a replica would then fail to start.
        """
        self.generate(warm_up_image(self.cond_size), ShapeRequest("gaussians", self.cfg.mc_resolution))
