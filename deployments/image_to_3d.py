"""``image_to_3d`` deployment: TripoSR scene code -> mesh (and surface gaussians for splats)."""

from typing import Any

from ray import serve

from deployments._runtime import StageRuntime, route_logs_to_serve
from gen3d.config import ImageTo3DConfig
from gen3d.image_to_3d import ImageTo3D
from gen3d.results import Traced


@serve.deployment
class ImageTo3DDeployment:
    """``Traced[PreparedImage]`` -> ``Traced[Asset3D]``.

    Args:
        config: an ``ImageTo3DConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        cfg = ImageTo3DConfig.model_validate(config)
        self.model = ImageTo3D.from_config(cfg)
        self.model.warmup()
        self.runtime = StageRuntime("image_to_3d", self.model.device)

    async def generate(self, upstream: Traced, splat: bool) -> Traced:
        asset, seconds = await self.runtime.call(self.model.generate, upstream.value.image, splat)
        return upstream.then("image_to_3d", asset, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()
