"""Builds the Ray Serve application: the only place deployments are bound together.

``serve run serve_config.yaml`` calls ``build_app`` with the config's ``args``, which Serve
validates against ``GraphArgs`` before anything starts.
"""

import logging
from dataclasses import asdict
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.exceptions import RayServeException

from deployments.background import BackgroundDeployment
from deployments.export import ExportDeployment
from deployments.image_to_3d import ImageTo3DDeployment
from deployments.ingress import Ingress
from deployments.state import SharedState
from deployments.text_to_image import TextToImageDeployment
from gen3d.config import load_preset
from gen3d.service.preflight import PreflightError, check_devices

logger = logging.getLogger(__name__)


class GraphArgs(BaseModel):
    """Builder arguments.

    Attributes:
        preset: a preset name in ``configs/`` (``tiny``, ``fast``, ``random``) or a YAML path.
        overrides: per-stage settings merged over the preset, e.g.
            ``{"image_to_3d": {"mc_resolution": 128}}``.

    HTTP limits, time-outs and the API key are the ``Ingress`` deployment's ``user_config`` and
    the job store's bounds are ``SharedState``'s: changing them restarts no model.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "fast"
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


def build_app(args: GraphArgs) -> Application:
    """Bind the four stages, the shared state (jobs, drain) and the ingress into one application."""
    preset = load_preset(args.preset, args.overrides)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    try:
        check_devices(preset, gpus, f"the Ray cluster has {gpus} GPU(s)", f"preset {args.preset}")
    except PreflightError as err:
        # Serve reports a RayServeException from a builder as its message alone, once, without
        # retrying the build: one clear line in `serve status` instead of tracebacks.
        raise RayServeException(str(err)) from None
    if any(cfg.mode != "real" for _, cfg in preset):
        logger.warning("preset %s uses random weights: outputs are demos, not real assets", args.preset)
    return Ingress.bind(
        TextToImageDeployment.bind(preset.text_to_image.model_dump()),
        BackgroundDeployment.bind(preset.background.model_dump()),
        ImageTo3DDeployment.bind(preset.image_to_3d.model_dump()),
        ExportDeployment.bind(preset.export.model_dump()),
        SharedState.bind(),
        preset.text_to_image.model_dump(),
        asdict(preset.mesh_defaults()),
    )
