"""Builds the Ray Serve application: the only place deployments are bound together.

``serve run serve_config.yaml`` calls ``build_app`` with the config's ``args``, which Serve
validates against ``GraphArgs`` before anything starts.
"""

import logging
import shutil
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.background import BackgroundDeployment
from deployments.export import ExportDeployment
from deployments.image_to_3d import ImageTo3DDeployment
from deployments.ingress import Ingress
from deployments.text_to_image import TextToImageDeployment
from gen3d.api import ServiceConfig
from gen3d.config import Preset, load_preset

logger = logging.getLogger(__name__)


class GraphArgs(BaseModel):
    """Builder arguments.

    Attributes:
        preset: a preset name in ``configs/`` (``tiny``, ``fast``, ``random``) or a YAML path.
        overrides: per-stage settings merged over the preset, e.g.
            ``{"image_to_3d": {"mc_resolution": 128}}``.
        service: HTTP limits, timeouts and the optional API key.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "fast"
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    service: ServiceConfig = ServiceConfig()


def check_devices(preset: Preset) -> None:
    """Fail at once, naming the way out, when a stage wants CUDA on a machine without it.

    Otherwise Serve would keep GPU replicas pending forever on a CPU-only machine.
    """
    wanted = [name for name, cfg in preset if cfg.device.startswith("cuda")]
    if wanted and not torch.cuda.is_available() and shutil.which("nvidia-smi") is None:
        raise ValueError(
            f"stages {wanted} are configured for CUDA but this machine has no CUDA GPU. "
            "For a CPU demo with random weights run: serve run configs/serve_tiny.yaml"
        )


def build_app(args: GraphArgs) -> Application:
    """Bind the four stages and the ingress into one application."""
    preset = load_preset(args.preset, args.overrides)
    check_devices(preset)
    if any(cfg.mode != "real" for _, cfg in preset):
        logger.warning("preset %s uses random weights: outputs are demos, not real assets", args.preset)
    return Ingress.bind(
        TextToImageDeployment.bind(preset.text_to_image.model_dump()),
        BackgroundDeployment.bind(preset.background.model_dump()),
        ImageTo3DDeployment.bind(preset.image_to_3d.model_dump()),
        ExportDeployment.bind(preset.export.model_dump()),
        preset.text_to_image.model_dump(),
        args.service.model_dump(),
    )
