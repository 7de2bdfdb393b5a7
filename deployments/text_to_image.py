"""``text_to_image`` deployment: FLUX.1-schnell, preloaded and warmed up in the constructor."""

from typing import Any

from ray import serve

from deployments._runtime import STAGE_OPTIONS, StageRuntime, route_logs_to_serve
from gen3d.config import TextToImageConfig
from gen3d.results import Traced
from gen3d.stages.text_to_image import TextToImage


@serve.deployment(**STAGE_OPTIONS)
class TextToImageDeployment:
    """Prompt -> ``Traced[GeneratedImage]``.

    Args:
        config: a ``TextToImageConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        cfg = TextToImageConfig.model_validate(config)
        self.model = TextToImage.from_config(cfg)
        self.model.warmup()
        self.runtime = StageRuntime("text_to_image", self.model.device)

    async def generate(self, prompt: str, seed: int, steps: int, width: int, height: int) -> Traced:
        image, seconds = await self.runtime.call(self.model.generate, prompt, seed, steps, width, height)
        return Traced(prompt).then("text_to_image", image, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()
