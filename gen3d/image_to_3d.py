"""``image_to_3d`` stage: prepared image -> TripoSR scene code -> mesh (+ surface gaussians).

In the random-weight modes (``tiny``, ``random``) the weights are random, so a sphere is
planted in the field (``plant_sphere_in_weights``). The matrices keep their sizes and the FLOPs stay
the real ones. Meshes are then closed, object-like surfaces, so the timings of marching and
export are representative and the tests get valid files. Such outputs are demos and are
labelled as such.
"""

import logging
import time

import numpy as np
import torch

from gen3d.config import ImageTo3DConfig
from gen3d.devices import TORCH_DTYPES, cap_memory_gib, resolve_device
from gen3d.errors import InputError, StageOutputError
from gen3d.results import Asset3D
from gen3d.splat.from_mesh import gaussians_from_samples, sample_surface
from gen3d.triposr import TripoSR, TripoSRConfig
from gen3d.triposr.planted import plant_sphere_in_weights

logger = logging.getLogger(__name__)

class ImageTo3D:
    """TripoSR on one device: conditioning image -> ``Asset3D``.

    Args:
        model: a TripoSR in eval mode on ``device``.
        cfg: the stage config.
        device: where the model lives.
    """

    def __init__(self, model: TripoSR, cfg: ImageTo3DConfig, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device

    @classmethod
    def from_config(cls, cfg: ImageTo3DConfig) -> "ImageTo3D":
        """Load (``real``) or build (``tiny``/``random``, with the planted demo sphere) the model."""
        if cfg.precision not in TORCH_DTYPES:
            raise ValueError(f"image_to_3d.precision: expected one of {sorted(TORCH_DTYPES)}, got {cfg.precision!r}")
        dtype = TORCH_DTYPES[cfg.precision]
        device = resolve_device(cfg.device)
        cap_memory_gib(device, cfg.gpu_memory_gib)
        if cfg.mode == "real":
            model = TripoSR.from_pretrained(cfg.repo, revision=cfg.revision, sha256=cfg.sha256, dtype=dtype, device=device)
        else:
            arch = TripoSRConfig.tiny() if cfg.mode == "tiny" else TripoSRConfig.official()
            torch.manual_seed(0)
            model = TripoSR.from_config(arch, dtype=dtype, device=device)
            plant_sphere_in_weights(model)
            logger.warning("image_to_3d: %s TripoSR with random weights and a planted sphere (demo output)", cfg.mode)
        return cls(model.eval(), cfg, device)

    @property
    def cond_size(self) -> int:
        return self.model.cfg.cond_image_size

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(S, S, 3) uint8 -> (1, S, S, 3) float in [0, 1] on the device; the model resizes."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError("image", f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(image)).to(self.device).float().div_(255.0)[None]

    @torch.inference_mode()
    def generate(self, image: np.ndarray, splat: bool = False, seed: int = 0) -> Asset3D:
        """Lift one prepared image to 3D.

        Args:
            image: (S, S, 3) uint8, as the ``background`` stage prepares it.
            splat: also sample surface gaussians coloured by the colour field.
            seed: seed of the surface sampling.

        Returns:
            ``Asset3D`` with the mesh in TripoSR's frame (z up) and optional gaussians.
        """
        start = time.perf_counter()
        timings = {}
        scene_code = self.model(self._image_tensor(image))
        timings["scene_code"] = self._lap(start)
        mesh = self.model.extract_mesh(
            scene_code, resolution=self.cfg.mc_resolution, threshold=self.cfg.mc_threshold, chunk=self.cfg.query_chunk
        )
        timings["mesh"] = self._lap(start) - timings["scene_code"]
        gaussians = None
        if splat:
            samples = sample_surface(mesh, self.cfg.splat_count, seed=seed)
            points = torch.from_numpy(samples.points).to(self.device)
            colors = self.model.query(scene_code, points, chunk=self.cfg.query_chunk)["color"].cpu().numpy()
            if not np.isfinite(colors).all():
                raise StageOutputError("colour field is not finite at the surface")
            gaussians = gaussians_from_samples(samples, colors=colors)
            timings["splat"] = self._lap(start) - timings["mesh"] - timings["scene_code"]
        return Asset3D(mesh, gaussians, time.perf_counter() - start, timings)

    def _lap(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def warmup(self) -> None:
        """One full pass (mesh and splat) so the first request pays no allocation or kernel-selection cost."""
        grey = np.full((self.cond_size, self.cond_size, 3), 127, dtype=np.uint8)
        self.generate(grey, splat=True)
