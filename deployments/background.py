"""``background`` deployment: rembg with a named session, then TripoSR preprocessing."""

from typing import Any

import numpy as np
from ray import serve

from deployments._runtime import STAGE_OPTIONS, StageRuntime, route_logs_to_serve
from gen3d.config import BackgroundConfig
from gen3d.results import GeneratedImage, Traced
from gen3d.stages.background import BackgroundRemoval


@serve.deployment(**STAGE_OPTIONS)
class BackgroundDeployment:
    """``Traced[GeneratedImage | ndarray]`` -> ``Traced[PreparedImage]``.

    Args:
        config: a ``BackgroundConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        cfg = BackgroundConfig.model_validate(config)
        self.model = BackgroundRemoval.from_config(cfg)
        self.model.warmup()
        self.runtime = StageRuntime("background", self.model.device)

    async def process(self, upstream: Traced, keep_cutout: bool = False) -> Traced:
        source = upstream.value
        image = source.image if isinstance(source, GeneratedImage) else np.asarray(source)
        prepared, seconds = await self.runtime.call(self.model.process, image, keep_cutout)
        return upstream.then("background", prepared, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()
