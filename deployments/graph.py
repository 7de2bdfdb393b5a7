"""Builds the Ray Serve application: the only place deployments are bound together.

``serve run serve_config.yaml`` calls ``build_app`` (``import_path: deployments.graph:build_app``,
importable wherever gen3d is installed) with the config's ``args``, which Serve validates against
``GraphArgs`` before anything starts.
"""

import logging
import os
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
from deployments.text_to_image import TextToImageDeployment, max_ongoing_requests
from gen3d.config import load_preset
from gen3d.service.mps import PIPE_ENV, MpsMode
from gen3d.service.preflight import PreflightError, check_devices

logger = logging.getLogger(__name__)


class GraphArgs(BaseModel):
    """Builder arguments.

    Attributes:
        preset: a preset name in ``configs/`` (``tiny``, ``fast``, ``random``) or a YAML path.
        overrides: per-stage settings merged over the preset, e.g.
            ``{"image_to_3d": {"mc_resolution": 128}}``.
        mps: ``auto``, ``on`` or ``off``: whether ``gen3d serve`` runs a CUDA MPS control daemon
            for the stage processes (``gen3d.service.mps``). The launcher reads it before Ray
            starts; the builder only checks that the replicas got the daemon when ``on``.

    HTTP limits, time-outs and the API key are the ``Ingress`` deployment's ``user_config`` and
    the job store's bounds are ``SharedState``'s: changing them restarts no model.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "fast"
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    mps: MpsMode = "off"


def check_mps(mode: MpsMode) -> None:
    """``mps: on`` needs the daemon ``gen3d serve`` starts: refuse a build without it (``serve run`` by hand)."""
    if mode == "on" and not os.environ.get(PIPE_ENV):
        raise RayServeException(
            f"mps: on, but this Ray cluster was not started with an MPS daemon ({PIPE_ENV} is unset): "
            "start the service with `gen3d serve CONFIG`, or set mps: auto or off"
        )
    if mode == "auto" and not os.environ.get(PIPE_ENV):
        logger.info("mps: auto, and no MPS daemon is running for this cluster: the GPU stages time-slice their cards")


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
    check_mps(args.mps)
    if any(cfg.mode != "real" for _, cfg in preset):
        logger.warning("preset %s uses random weights: outputs are demos, not real assets", args.preset)
    return Ingress.bind(
        # Room for a full batch running and the next one forming behind it.
        TextToImageDeployment.options(max_ongoing_requests=max_ongoing_requests(preset.text_to_image)).bind(
            preset.text_to_image.model_dump()
        ),
        BackgroundDeployment.bind(preset.background.model_dump()),
        ImageTo3DDeployment.bind(preset.image_to_3d.model_dump()),
        ExportDeployment.bind(preset.export.model_dump()),
        SharedState.bind(),
        preset.text_to_image.model_dump(),
        asdict(preset.mesh_defaults()),
        preset.weights(),
        asdict(preset.mesh_limits()),
        asdict(preset.shape_model()),
    )
