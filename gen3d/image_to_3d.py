"""``image_to_3d`` stage: prepared image -> TripoSR scene code -> mesh (+ surface gaussians).

In the random-weight modes (``tiny``, ``random``) the weights are random, so a fixed shape is
planted in the field (``plant_demo_sphere``). The matrices keep their sizes and the FLOPs stay
the real ones. Meshes are then closed, object-like surfaces, so the timings of marching and
export are representative and the tests get valid files. Such outputs are demos and are
labelled as such.
"""

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from gen3d.config import ImageTo3DConfig
from gen3d.devices import cap_memory_gib, resolve_device
from gen3d.errors import InputError, StageOutputError
from gen3d.results import Asset3D
from gen3d.splat.from_mesh import gaussians_from_samples, sample_surface
from gen3d.triposr import TripoSR, TripoSRConfig

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# SiLU(x) ~ x for x >> 1: the planted signal rides this offset through the decoder's hidden layers.
_PASS_OFFSET = 20.0


@torch.no_grad()
def plant_demo_sphere(model: TripoSR, radius: float = 0.5, color: tuple[float, float, float] = (0.8, 0.5, 0.2)) -> None:
    """Make the field of a random-weight model a sphere, for any input image.

    Plane channel 0 of the triplane tokens holds -(u² + v²). The backbone's output projection is
    zeroed, so its residual passes the tokens through unchanged. The upsampler copies channel 0.
    The decoder sums the three planes, giving -2|p|² in normalised coordinates, and maps that to
    a density equal to the surface threshold at ``radius``.

    Args:
        model: a TripoSR with random weights, modified in place.
        radius: sphere radius as a fraction of the field's half side.
        color: constant RGB in (0, 1) of the colour field.
    """
    planes = model.tokenizer.embeddings
    size = planes.shape[-1]
    axis = (torch.arange(size, device=planes.device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    profile = -(axis[:, None] ** 2 + axis[None, :] ** 2)
    planes[:, 0] = profile.to(planes.dtype)
    model.backbone.proj_out.weight.zero_()
    model.backbone.proj_out.bias.zero_()
    upsample = model.post_processor.upsample
    upsample.weight.zero_()
    upsample.bias.zero_()
    upsample.weight[0, 0] = 1.0
    linears = [layer for layer in model.decoder.layers if isinstance(layer, torch.nn.Linear)]
    channels = linears[0].in_features // 3
    first, hidden, last = linears[0], linears[1:-1], linears[-1]
    first.weight.zero_()
    first.bias.zero_()
    first.weight[0, [0, channels, 2 * channels]] = 1.0
    first.bias[0] = _PASS_OFFSET
    for layer in hidden:
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[0, 0] = 1.0
    # density raw = slope * (-2 r^2 + 2 radius^2) + (threshold level): exp(raw - 1) = 25 at r = radius.
    slope = 10.0
    surface_raw = 1.0 + math.log(25.0)
    last.weight.zero_()
    last.bias.zero_()
    last.weight[0, 0] = slope
    last.bias[0] = surface_raw - slope * _PASS_OFFSET + slope * 2.0 * radius**2
    last.bias[1:4] = torch.logit(torch.tensor(color, dtype=torch.float32)).to(last.bias.dtype)


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
        self.dtype = DTYPES[cfg.precision] if cfg.precision in DTYPES else None
        if self.dtype is None:
            raise ValueError(f"image_to_3d.precision: expected one of {sorted(DTYPES)}, got {cfg.precision!r}")

    @classmethod
    def from_config(cls, cfg: ImageTo3DConfig) -> "ImageTo3D":
        """Load (``real``) or build (``tiny``/``random``, with the planted demo sphere) the model."""
        device = resolve_device(cfg.device)
        cap_memory_gib(device, cfg.gpu_memory_gib)
        dtype = DTYPES.get(cfg.precision)
        if cfg.mode == "real":
            model = TripoSR.from_pretrained(cfg.repo, revision=cfg.revision, sha256=cfg.sha256)
            model = model.to(device=device, dtype=dtype)
        else:
            arch = TripoSRConfig.tiny() if cfg.mode == "tiny" else TripoSRConfig.official()
            torch.manual_seed(0)
            with torch.device(device):
                model = TripoSR.from_config(arch).to(dtype=dtype)
            plant_demo_sphere(model)
            logger.warning("image_to_3d: %s TripoSR with random weights and a planted sphere (demo output)", cfg.mode)
        return cls(model.eval(), cfg, device)

    @property
    def cond_size(self) -> int:
        return self.model.cfg.cond_image_size

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError("image", f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).float().div_(255.0)[None]
        if pixels.shape[1:3] != (self.cond_size, self.cond_size):
            chw = F.interpolate(pixels.permute(0, 3, 1, 2), size=(self.cond_size,) * 2, mode="bilinear",
                                antialias=True, align_corners=False)
            pixels = chw.permute(0, 2, 3, 1)
        return pixels

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
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            scene_code = self.model(self._image_tensor(image))
            timings["scene_code"] = self._lap(start)
            mesh = self.model.extract_mesh(scene_code, resolution=self.cfg.mc_resolution, threshold=self.cfg.mc_threshold)
        timings["mesh"] = self._lap(start) - timings["scene_code"]
        gaussians = None
        if splat:
            samples = sample_surface(mesh, self.cfg.splat_count, seed=seed)
            points = torch.from_numpy(samples.points).to(self.device)
            colors = self.model.query(scene_code, points)["color"].float().cpu().numpy()
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
