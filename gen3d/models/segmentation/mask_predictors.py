"""Foreground-mask predictors of the background stage: rembg's own session on the CPU, or torch.

Both take an RGB image and return rembg's mask (uint8, 255 = object) for one named rembg session.
``RembgPredictor`` is rembg itself (onnxruntime, rembg's pre- and post-processing in PIL/numpy).
``TorchPredictor`` runs the same ONNX graph through ``gen3d.models.segmentation.onnx_torch`` and does rembg's pre- and
post-processing as tensor ops on the same device: at 1024^2 rembg's numpy normalisation alone
takes ~50 ms of CPU, more than the stage's GPU budget.
"""

import logging
from dataclasses import dataclass

import numpy as np
import rembg
import torch
import torch.nn.functional as F
from rembg.sessions.base import BaseSession

from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.parts.cuda_graphs import CudaGraphed

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SessionSpec:
    """What a rembg session does around its network (read from its ``predict``).

    Attributes:
        size: side of the square the image is resized to.
        mean: per-channel mean subtracted after scaling the image by its maximum value.
        std: per-channel divisor after the mean.
        sigmoid: the network returns logits (BiRefNet) rather than probabilities.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    sigmoid: bool = False


#: rembg's pre- and post-processing for the sessions the torch path supports.
#: ``tests/models/segmentation/test_mask_predictors.py`` checks each against rembg's own ``predict``.
SESSION_SPECS: dict[str, SessionSpec] = {
    "u2net": SessionSpec(320, IMAGENET_MEAN, IMAGENET_STD),
    "u2net_custom": SessionSpec(320, IMAGENET_MEAN, IMAGENET_STD),
    "isnet-general-use": SessionSpec(1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),
    "birefnet-general": SessionSpec(1024, IMAGENET_MEAN, IMAGENET_STD, sigmoid=True),
    "birefnet-general-lite": SessionSpec(1024, IMAGENET_MEAN, IMAGENET_STD, sigmoid=True),
}


def session_spec(name: str) -> SessionSpec:
    """The spec of rembg session ``name``.

    Raises:
        ValueError: the torch path does not know this session's processing.
    """
    if name not in SESSION_SPECS:
        raise ValueError(
            f"background: session {name!r} has no torch (CUDA) implementation; expected one of "
            f"{sorted(SESSION_SPECS)}, or set background.device: cpu to run it through onnxruntime"
        )
    return SESSION_SPECS[name]


class RembgPredictor:
    """rembg's named session, run by onnxruntime on the CPU.

    Args:
        session: a rembg session (its class decides pre- and post-processing).
    """

    def __init__(self, session: BaseSession) -> None:
        self.session = session
        self.device = torch.device("cpu")

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask."""
        return np.asarray(rembg.remove(rgb, session=self.session, only_mask=True), dtype=np.uint8)


class TorchPredictor:
    """A rembg session's graph and processing as torch ops on one device.

    Args:
        net: the session's ONNX graph as a module, built for input (1, 3, spec.size, spec.size).
        spec: the session's processing.
        device: where everything runs.
        dtype: the network's precision (pre- and post-processing stay float32).
        channels_last: NHWC memory layout for the network (faster convolutions on tensor cores).
        cuda_graphs: replay the network as one CUDA graph (CUDA only; captured on the first call).

    Raises:
        ValueError: the module's input shape does not match ``spec.size``, or ``cuda_graphs``
            off CUDA.
    """

    def __init__(
        self,
        net: OnnxTorchModule,
        spec: SessionSpec,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        if net.input_shape != (1, 3, spec.size, spec.size):
            raise ValueError(f"background: network input {net.input_shape} does not match session size {spec.size}")
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"background: CUDA graphs need a CUDA device, got {device}")
        self.spec = spec
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(device=device, dtype=dtype, memory_format=self.memory_format).eval()
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        self._forward = CudaGraphed(self.net, "background") if cuda_graphs else self.net

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, S, S) network input, as rembg's ``normalize`` builds it.

        rembg resizes with Lanczos; antialiased bicubic is the closest resampling torch has.
        """
        image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float()
        size = (self.spec.size, self.spec.size)
        image = F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False)
        image = image.clamp_(0, 255).round_()  # rembg resizes an 8-bit image
        # rembg scales by the resized image's own maximum, not by 255.
        image = image / image.amax().clamp_min(1e-6)
        return ((image - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def postprocess(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(1, C, S, S) network output -> (height, width) uint8 mask, as rembg's ``predict`` ends."""
        mask = prediction[:, :1].float()
        if self.spec.sigmoid:
            mask = mask.sigmoid()
        low, high = mask.amin(), mask.amax()
        mask = (mask - low) / (high - low).clamp_min(1e-12)
        mask = F.interpolate(mask, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return (mask.clamp_(0, 1) * 255).to(torch.uint8)[0, 0]

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask."""
        prediction = self._forward(self.preprocess(rgb))
        return self.postprocess(prediction, rgb.shape[0], rgb.shape[1]).cpu().numpy()
