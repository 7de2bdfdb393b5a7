"""The ``image_to_3d`` stage's contract: what a request asks (``ShapeRequest``), and what every
image-to-3D model answers (``ImageTo3D``: ``generate`` and ``bake``).

Each model's stage class subclasses ``ImageTo3D``; ``gen3d.stages.image_to_3d.build_image_to_3d``
picks the one ``image_to_3d.model`` names.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch

from gen3d.config import ImageTo3DConfig
from gen3d.formats import Product
from gen3d.results import Asset3D, Remeshed, TexturedMesh


@dataclass(frozen=True)
class FlowOptions:
    """TRELLIS's per-request sampler options; None keeps the preset's.

    Attributes:
        ss_steps / slat_steps: Euler steps of the sparse-structure / structured-latent flow.
        ss_cfg / slat_cfg: their classifier-free guidance strengths.
    """

    ss_steps: int | None = None
    ss_cfg: float | None = None
    slat_steps: int | None = None
    slat_cfg: float | None = None


@dataclass(frozen=True)
class ShapeRequest:
    """What one request needs from the stage.

    Attributes:
        product: ``mesh``, or ``gaussians`` (a splat).
        resolution: TripoSR's marching-cubes grid points per axis (TRELLIS's grid is fixed).
        keep_color_field: hand the colour field on for a later ``bake``.
        seed: seed of the request's randomness (TRELLIS's noise; TripoSR's splat sampling).
        flow: TRELLIS's sampler options.
    """

    product: Product
    resolution: int
    keep_color_field: bool = False
    seed: int = 0
    flow: FlowOptions = FlowOptions()


def warm_up_image(size: int, backdrop: int = 127) -> np.ndarray:
    """(size, size, 3) uint8: a red-brown disc centred on a flat backdrop of level ``backdrop``."""
    rows, cols = np.mgrid[:size, :size]
    image = np.full((size, size, 3), backdrop, np.uint8)
    image[(rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 3) ** 2] = (200, 60, 40)
    return image


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(S, S, 3) uint8 -> (S, S, 3) float in [0, 1] on ``device``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 from the background stage, got {image.shape} {image.dtype}")
    # A copy: arrays that arrive through Ray are read-only, which torch.from_numpy warns about.
    return torch.tensor(image, device=device).float().div_(255.0)


#: The network a stage wraps (``TripoSR``, ``TrellisImageTo3D``).
Model = TypeVar("Model", bound=torch.nn.Module)


class ImageTo3D(ABC, Generic[Model]):
    """One image-to-3D model on one device.

    Args:
        model: the network in eval mode on ``device``.
        cfg: the stage config.
        device: where the model lives.
    """

    def __init__(self, model: Model, cfg: ImageTo3DConfig, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device

    @classmethod
    @abstractmethod
    def build(cls, cfg: ImageTo3DConfig, dtype: torch.dtype, device: torch.device) -> "ImageTo3D":
        """Load or build the model on ``device`` in ``dtype`` (``build_image_to_3d`` checked both)."""

    @property
    @abstractmethod
    def cond_size(self) -> int:
        """Side of the conditioning image the model expects."""

    @abstractmethod
    def generate(self, image: np.ndarray, request: ShapeRequest) -> Asset3D:
        """Lift one prepared (S, S, 3) uint8 image to 3D, model frame (z up)."""

    @abstractmethod
    def bake(self, remeshed: Remeshed) -> TexturedMesh:
        """Unwrap ``remeshed.mesh`` and bake its colour field into the atlas."""

    @abstractmethod
    def warmup(self) -> None:
        """One full pass, so the first request pays no allocation or kernel-selection cost."""
