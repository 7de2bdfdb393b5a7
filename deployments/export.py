"""``export`` deployment (CPU): mesh files and splat PLYs, off the GPU process's critical path."""

from typing import Any

import torch
from ray import serve

from deployments._runtime import StageRuntime, route_logs_to_serve
from gen3d.config import ExportConfig, OutputFormat, UpAxis
from gen3d.export import Exporter
from gen3d.results import Traced


@serve.deployment
class ExportDeployment:
    """``Traced[Asset3D]`` -> ``Traced[ExportedFile]``.

    Args:
        config: an ``ExportConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        self.model = Exporter.from_config(ExportConfig.model_validate(config))
        self.runtime = StageRuntime("export", torch.device("cpu"))

    async def export(self, upstream: Traced, fmt: OutputFormat, up: UpAxis) -> Traced:
        asset = upstream.value
        source = asset.gaussians if fmt == "splat" else asset.mesh
        exported, seconds = await self.runtime.call(self.model.export, source, fmt, up)
        return upstream.then("export", exported, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()
