"""``image_to_3d`` deployment: TripoSR scene code -> mesh (and surface gaussians), and texture bakes."""

from typing import Any

from ray import serve

from deployments._runtime import STAGE_OPTIONS, StageRuntime, route_logs_to_serve
from gen3d.config import ImageTo3DConfig
from gen3d.results import Traced
from gen3d.stages.image_to_3d import ShapeRequest, build_image_to_3d


@serve.deployment(**STAGE_OPTIONS)
class ImageTo3DDeployment:
    """``Traced[PreparedImage]`` -> ``Traced[Asset3D]``; ``Traced[Remeshed]`` -> ``Traced[TexturedMesh]``.

    Bakes (unwrap and texture, both in torch on the GPU) come back to this stage between two CPU
    steps of the export stage (decimation before, file writing after), so the GPU never waits on
    CPU work.

    Args:
        config: an ``ImageTo3DConfig`` as a mapping (validated here).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        route_logs_to_serve()
        cfg = ImageTo3DConfig.model_validate(config)
        self.model = build_image_to_3d(cfg)
        self.model.warmup()
        self.runtime = StageRuntime("image_to_3d", self.model.device)

    async def generate(self, upstream: Traced, request: ShapeRequest) -> Traced:
        asset, seconds = await self.runtime.call(self.model.generate, upstream.value.image, request)
        return upstream.then("image_to_3d", asset, seconds)

    async def bake(self, upstream: Traced) -> Traced:
        textured, seconds = await self.runtime.call(self.model.bake, upstream.value)
        return upstream.then("bake", textured, seconds)

    def check_health(self) -> None:
        self.runtime.check_health()
