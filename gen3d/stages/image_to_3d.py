"""``image_to_3d`` stage: prepared image -> 3D asset, with the model the preset names.

``build_image_to_3d`` builds TripoSR (``image_to_3d_triposr.py``, fast, a triplane field) or
TRELLIS-image-large (``image_to_3d_trellis.py``, the field's quality model). Both answer the same
calls (``image_to_3d_base.py``): ``generate`` (mesh, gaussians for a splat, the colour field a
later bake needs) and ``bake`` (unwrap a decimated mesh and bake its texture on the stage's device).
"""

from gen3d.config import ImageTo3DConfig
from gen3d.devices import TORCH_DTYPES, cap_memory_gib, resolve_device
from gen3d.stages.image_to_3d_base import (
    FlowOptions,
    ImageTo3D,
    ShapeRequest,
    image_tensor,
    warm_up_image,
)
from gen3d.stages.image_to_3d_trellis import TrellisImageTo3DStage
from gen3d.stages.image_to_3d_triposr import TripoSRImageTo3D

#: ``image_to_3d.model`` -> its stage class. An explicit table, not classes registering themselves
#: on import: a Serve replica unpickles only the modules its deployment's code names, so a
#: registry filled by import side effects can be empty there.
MODELS: dict[str, type[ImageTo3D]] = {"triposr": TripoSRImageTo3D, "trellis": TrellisImageTo3DStage}


def build_image_to_3d(cfg: ImageTo3DConfig) -> ImageTo3D:
    """Build the model ``cfg.model`` names, on ``cfg.device`` in ``cfg.precision``."""
    if cfg.precision not in TORCH_DTYPES:
        raise ValueError(f"image_to_3d.precision: expected one of {sorted(TORCH_DTYPES)}, got {cfg.precision!r}")
    if cfg.model not in MODELS:
        raise ValueError(f"image_to_3d.model: expected one of {sorted(MODELS)}, got {cfg.model!r}")
    device = resolve_device(cfg.device)
    cap_memory_gib(device, cfg.gpu_memory_gib)
    return MODELS[cfg.model].build(cfg, TORCH_DTYPES[cfg.precision], device)


__all__ = [
    "MODELS",
    "FlowOptions",
    "ImageTo3D",
    "ShapeRequest",
    "TrellisImageTo3DStage",
    "TripoSRImageTo3D",
    "build_image_to_3d",
    "image_tensor",
    "warm_up_image",
]  # fmt: skip
