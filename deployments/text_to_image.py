"""``text_to_image`` deployment: FLUX.1-schnell, preloaded and warmed up in the constructor.

Requests that queue while a pipeline call runs are batched (``@serve.batch``, up to the preset's
``max_batch_size``, waiting at most ``batch_wait_timeout_s`` for companions); each request still
gets the image it would get alone (``gen3d.stages.text_to_image_batch``).
"""

from typing import Any

from ray import serve

from deployments._runtime import STAGE_OPTIONS, StageRuntime, route_logs_to_serve
from gen3d.config import TextToImageConfig
from gen3d.errors import StageOutputError
from gen3d.results import GeneratedImage, Traced
from gen3d.stages.text_to_image import TextToImage
from gen3d.stages.text_to_image_batch import ImageRequest, group_by_settings

#: One request's share of a batch: its image (or the error of its image alone) and the call's seconds.
Outcome = tuple[GeneratedImage | StageOutputError, float]


def max_ongoing_requests(cfg: TextToImageConfig) -> int:
    """Requests a FLUX replica takes at once: a full batch running and the next one queueing behind it."""
    return max(int(STAGE_OPTIONS["max_ongoing_requests"]), 2 * cfg.max_batch_size)


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
        self.batched.set_max_batch_size(cfg.max_batch_size)
        self.batched.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    async def generate(self, prompt: str, seed: int, steps: int, width: int, height: int) -> Traced:
        image, seconds = await self.batched(ImageRequest(prompt, seed, steps, width, height))
        if isinstance(image, StageOutputError):
            raise image
        return Traced(prompt).then("text_to_image", image, seconds)

    # The preset's sizes replace these in the constructor.
    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def batched(self, requests: list[ImageRequest]) -> list[Outcome]:
        """One pipeline call per group of equal settings; each request gets its image and its call's seconds."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        for group in group_by_settings(requests):
            members = [requests[index] for index in group]
            images, seconds = await self.runtime.call(self.model.generate_batch, members, items=len(members))
            for index, image in zip(group, images, strict=True):
                outcomes[index] = (image, seconds)
        return outcomes  # type: ignore[return-value]

    def check_health(self) -> None:
        self.runtime.check_health()
