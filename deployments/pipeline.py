"""The pipeline behind the HTTP edge: stage chain, time limits, admission, warm-up, drain, jobs.

``chain`` hands each stage the previous stage's ``DeploymentResponse`` without awaiting in
between, so stage A of request N+1 runs while stage B of request N does. ``/generate`` awaits
only the last response. A job follows the same chain and awaits every response in turn, to
record the stage timeline and keep the image and cut-out for the studio
(``deployments/job_runner.py``: jobs come from the durable job store, under leases).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.errors import ServiceBusy, StageTimeout
from deployments.job_runner import JobRunner
from deployments.store_client import StoreClient
from gen3d.formats import FORMATS, MeshOptions, needs_bake
from gen3d.results import Traced
from gen3d.service.api import Job, JobDefaults, ServiceConfig
from gen3d.stages.image_to_3d import ShapeRequest

logger = logging.getLogger(__name__)

WARM_UP_RETRY_S = 5.0


@dataclass(frozen=True)
class StageHandles:
    """The bound stage deployments and the shared state (job store and drain board)."""

    text_to_image: DeploymentHandle
    background: DeploymentHandle
    image_to_3d: DeploymentHandle
    export: DeploymentHandle
    state: DeploymentHandle


@dataclass(frozen=True)
class Step:
    """One stage call of a chained request: the stage's name and its pending result."""

    stage: str
    response: DeploymentResponse


class Admission:
    """Bounds the requests and running jobs of one ingress replica, and drains them at shutdown.

    ``/generate`` is refused at once when full (503); a job waits as ``queued`` for a slot.
    """

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.in_flight = 0
        self.draining = False
        self._changed = asyncio.Condition()

    def start_drain(self) -> None:
        """Refuse new work from now on; queued jobs give up when they next wake (any release)."""
        self.draining = True

    def refuse_if_draining(self) -> None:
        """``ServiceBusy`` once a drain has started."""
        if self.draining:
            raise ServiceBusy("the service is shutting down; retry on another instance", self.service.retry_after_s)

    def take(self) -> None:
        """A slot at once, or ``ServiceBusy``; whoever takes one gives it back with ``give_back``."""
        self.refuse_if_draining()
        if self.in_flight >= self.service.max_in_flight:
            raise ServiceBusy(f"busy: {self.in_flight} requests in flight; retry later", self.service.retry_after_s)
        self.in_flight += 1

    async def give_back(self) -> None:
        """Free a slot taken with ``take``; a queued job or the drain waiting for it wakes."""
        self.in_flight -= 1
        async with self._changed:
            self._changed.notify_all()

    @asynccontextmanager
    async def now(self) -> AsyncIterator[None]:
        """A slot at once, or ``ServiceBusy``."""
        self.take()
        try:
            yield
        finally:
            await self.give_back()

    @asynccontextmanager
    async def queued(self) -> AsyncIterator[None]:
        """A slot once one is free (a job waiting as ``queued``); ``ServiceBusy`` if a drain starts first."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.draining or self.in_flight < self.service.max_in_flight)
        async with self.now():
            yield

    async def drain(self) -> bool:
        """Refuse new work and wait (up to ``drain_timeout_s``) for work in flight; True if it all finished."""
        self.start_drain()
        async with self._changed:
            self._changed.notify_all()  # queued jobs give up
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.in_flight == 0), self.service.drain_timeout_s)
            except TimeoutError:
                logger.warning("drain: %d requests still in flight after %g s", self.in_flight, self.service.drain_timeout_s)
                return False
        return True


class Pipeline:
    """Runs requests and jobs through the stages.

    Args:
        handles: the stage deployments and the shared state.
        defaults: the preset's request defaults (used by the warm-up jobs).
        service: limits and time-outs; ``reconfigure`` replaces them.
    """

    def __init__(self, handles: StageHandles, defaults: JobDefaults, service: ServiceConfig) -> None:
        self.handles = handles
        self.defaults = defaults
        self.service = service
        self.admission = Admission(service)
        self.store = StoreClient(handles.state)
        self.jobs = JobRunner(self, self.store)

    @property
    def in_flight(self) -> int:
        """Work that must end before this replica stops: requests and jobs in slots, and held jobs waiting."""
        return self.admission.in_flight + self.jobs.waiting

    def reconfigure(self, service: ServiceConfig) -> None:
        self.service = service
        self.admission.service = service

    def chain(self, job: Job, keep_cutout: bool = False) -> list[Step]:
        """Submit every stage call of ``job`` at once, each fed the previous stage's response."""
        h = self.handles
        fmt = FORMATS[job.format]
        steps: list[Step] = []
        source: DeploymentResponse | Traced = Traced(job.image)
        if job.prompt is not None:
            source = h.text_to_image.generate.remote(job.prompt, job.seed, job.steps, job.width, job.height)
            steps.append(Step("text_to_image", source))
        prepared = h.background.process.remote(source, keep_cutout)
        steps.append(Step("background", prepared))
        bake = needs_bake(fmt, job.mesh)
        shape = ShapeRequest(fmt.product, self._resolution(job.mesh), bake, job.seed, job.flow)
        asset = h.image_to_3d.generate.remote(prepared, shape)
        steps.append(Step("image_to_3d", asset))
        if bake:
            remeshed = h.export.remesh.remote(asset, job.mesh)
            steps.append(Step("remesh", remeshed))
            asset = h.image_to_3d.bake.remote(remeshed)
            steps.append(Step("bake", asset))
        steps.append(Step("export", h.export.export.remote(asset, job.format, job.up, job.mesh)))
        return steps

    def _resolution(self, mesh: MeshOptions | None) -> int:
        return mesh.resolution if mesh is not None else self.defaults.mesh.resolution

    async def run(self, job: Job) -> Traced:
        """``/generate``: the exported file with every stage's seconds, within the request timeout."""
        async with self.admission.now():
            steps = self.chain(job)
            return await self.bounded(self._last(steps), steps, self.service.request_timeout_s)

    @staticmethod
    async def _last(steps: list[Step]) -> Traced:
        return await steps[-1].response

    @staticmethod
    def cancel(steps: list[Step]) -> None:
        """Cancel every stage call of a chain (those already done are unaffected)."""
        for step in steps:
            step.response.cancel()

    async def bounded(self, work, steps: list[Step], seconds: float):
        """Await ``work`` for at most ``seconds``; on time-out cancel every stage call."""
        try:
            return await asyncio.wait_for(work, timeout=seconds)
        except TimeoutError:
            self.cancel(steps)
            raise StageTimeout(seconds) from None
        except BackPressureError:
            raise ServiceBusy("a stage queue is full; retry later", self.service.retry_after_s) from None

    # -- start-up and shutdown -----------------------------------------------------------------

    def warm_up_jobs(self) -> list[Job]:
        """One job per path through the graph: a UV-textured mesh (remesh and bake) and a splat."""
        text = self.defaults.text
        mesh = replace(self.defaults.mesh, texture="uv")
        common = dict(prompt="warm-up", image=None, seed=0, steps=text.steps, width=text.width, height=text.height)
        return [Job(**common, format="glb", up="+y", mesh=mesh), Job(**common, format="splat", up="+y", mesh=None)]

    async def warm_up(self) -> None:
        """Send the warm-up jobs through every stage until they pass, so that ``/health`` means
        ready, then start taking up jobs from the store.

        Stage replicas may still be loading or compiling (minutes for fp8 FLUX), so failures are
        retried; the first client then pays nothing for Serve's handles and routers.
        """
        while True:
            try:
                start = time.perf_counter()
                for job in self.warm_up_jobs():
                    await self._last(self.chain(job))
                logger.info("graph warm-up finished in %.2f s", time.perf_counter() - start)
                self.jobs.start()
                return
            except Exception as exc:
                logger.info("graph warm-up not through yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(WARM_UP_RETRY_S)

    async def drain(self) -> None:
        """Stop admitting work, then wait for requests and jobs in flight (bounded); jobs still
        waiting for a slot go back to the store, queued."""
        finished = await self.admission.drain()
        await self.jobs.settle(self.service.drain_timeout_s)
        logger.info("drain %s; %d jobs still held", "complete" if finished else "timed out", len(self.jobs.leases))
