"""``export`` deployment (CPU): mesh decimation, clean-up and file writing."""

from typing import Any

import torch
from ray import serve

from deployments._runtime import STAGE_OPTIONS, StageRuntime, route_logs_to_serve
from gen3d.config import ExportConfig
from gen3d.formats import MeshOptions, OutputFormat
from gen3d.orientation import UpAxis
from gen3d.results import Traced
from gen3d.stages.export import Exporter


@serve.deployment(**STAGE_OPTIONS)
class ExportDeployment:
    """``Traced[Asset3D]`` -> ``Traced[Remeshed]`` (``remesh``); ``Traced[Asset3D | TexturedMesh]`` ->
    ``Traced[ExportedFile]`` (``export``).

    Args:
        config: an ``ExportConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        self.model = Exporter.from_config(ExportConfig.model_validate(config))
        self.runtime = StageRuntime("export", torch.device("cpu"))

    async def remesh(self, upstream: Traced, mesh: MeshOptions) -> Traced:
        remeshed, seconds = await self.runtime.call(self.model.remesh, upstream.value, mesh)
        return upstream.then("remesh", remeshed, seconds)

    async def export(self, upstream: Traced, fmt: OutputFormat, up: UpAxis, mesh: MeshOptions | None) -> Traced:
        exported, seconds = await self.runtime.call(self.model.export, upstream.value, fmt, up, mesh)
        return upstream.then("export", exported, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()

    def __del__(self) -> None:
        # Serve calls this when the replica stops: the decimation pool's processes go with it.
        # (A replica whose constructor failed has no model.)
        model = getattr(self, "model", None)
        if model is not None:
            model.close()
