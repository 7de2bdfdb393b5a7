"""Jobs, run by the ingress replicas from the durable job store, under leases.

``submit`` writes a job to the store before ``POST /jobs`` answers. The replica that took it runs
it at once when it has room, its stages starting while the write is in flight; otherwise any
replica takes it up: each one claims due jobs every ``CLAIM_EVERY_S`` as its slots free. A runner
holds each job by a lease that it renews every quarter of ``lease_s``; a replica that dies (kill
-9, its node lost) stops renewing, and its jobs are due again ``lease_s`` later, for whichever
replica claims them first.

A run goes through every stage from the start, as ``/generate`` does: the same request and seed
give the same files, so a re-run rewrites what an earlier run wrote with the same bytes. Each
stage's timings and files are written before the next stage's result is awaited. A run that
fails for a reason worth retrying (5xx: a stage replica died, a stage queue was full) is given
back and runs again later, up to ``max_attempts`` runs; bad input found late (4xx) and a
timeout (504) fail the job at once.

On a drain, jobs already running finish; jobs still waiting for a slot are given back and stay
queued in the store for the next start.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Protocol

from pydantic import ValidationError

from deployments.errors import ServiceBusy, describe
from deployments.store_client import StoreClient
from gen3d.imaging import encode_png
from gen3d.results import ExportedFile, GeneratedImage, PreparedImage, Traced
from gen3d.service.api import (
    GenerateRequest,
    Job,
    JobDefaults,
    ServiceConfig,
    first_validation_error,
    job_from_request,
)
from gen3d.service.job_store import (
    Claim,
    LeaseLost,
    StoredFile,
    StoreFull,
    StoreUnavailable,
)


class StageRunner(Protocol):
    """What a ``JobRunner`` needs of the pipeline that owns it (``deployments.pipeline.Pipeline``).

    A protocol rather than an import: the pipeline creates its runner, so importing it back
    would make the two modules a cycle.
    """

    admission: Any
    service: ServiceConfig
    defaults: JobDefaults

    def chain(self, job: Job, keep_cutout: bool = False) -> list[Any]: ...

    def bounded(self, work: Awaitable[Any], steps: list[Any], seconds: float) -> Awaitable[Any]: ...

    def cancel(self, steps: list[Any]) -> None: ...

logger = logging.getLogger(__name__)

#: How often a replica with free slots looks for due jobs.
CLAIM_EVERY_S = 0.5
#: How long a run's write waits for an unavailable store (a restarting replica, Redis down).
WRITE_PATIENCE_S = 30.0
#: How long ``POST /jobs`` waits for an unavailable store before answering 503.
SUBMIT_PATIENCE_S = 5.0
#: Failures worth another run: a stage or the store failed, not the request.
RETRIED_STATUSES = (500, 502, 503)


def asset_info(exported: ExportedFile) -> dict[str, Any]:
    """What a client shows about a finished asset before downloading it."""
    return {
        "bytes": len(exported.data),
        "faces": exported.faces,
        "media_type": exported.media_type,
        "filename": f"asset.{exported.extension}",
    }


def stage_files(value: object) -> dict[str, StoredFile]:
    """The files a job keeps from one stage's result: the image, the cut-out, the asset."""
    if isinstance(value, GeneratedImage):
        return {"image.png": StoredFile(encode_png(value.image), "image/png")}
    if isinstance(value, PreparedImage) and value.cutout is not None:
        return {"cutout.png": StoredFile(encode_png(value.cutout), "image/png")}
    if isinstance(value, ExportedFile):
        return {f"asset.{value.extension}": StoredFile(value.data, value.media_type)}
    return {}


class JobRunner:
    """Takes jobs from the store and runs them through the pipeline of this ingress replica.

    Args:
        pipeline: the stage chain, its admission (slots) and its settings.
        store: the job store.
    """

    def __init__(self, pipeline: StageRunner, store: StoreClient) -> None:
        self.pipeline = pipeline
        self.store = store
        #: Jobs this replica holds, by id: their lease tokens.
        self.leases: dict[str, str] = {}
        #: Held jobs still waiting for a slot.
        self.waiting = 0
        self._runs: dict[str, asyncio.Task] = {}
        self._loops: list[asyncio.Task] = []
        self._renew_every_s = 1.0
        self._store_down = False

    def room(self) -> int:
        """Jobs this replica could start now."""
        admission = self.pipeline.admission
        return admission.service.max_in_flight - admission.in_flight - self.waiting

    def start(self) -> None:
        """Begin taking up due jobs (after the warm-up, so that the stages answer)."""
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._claim_due()), loop.create_task(self._renew())]

    async def submit(self, request: GenerateRequest, job: Job) -> str:
        """Write a new job to the store, then run it here if there is room; return its id.

        With room, the job's slot is taken and its stages start while the store writes it: the
        ``202`` waits for the durable write, the stages need not.

        Raises:
            ServiceBusy: shutting down, or the store is full or unavailable.
        """
        self.pipeline.admission.refuse_if_draining()
        job_id = uuid.uuid4().hex
        steps = self._start_stages(job)
        payload = request.model_dump_json(exclude_unset=True).encode()  # the request as sent
        try:  # the same id on every try: a retried create after a lost answer changes nothing
            claim = await self.store.call("create", job_id, payload, steps is not None, patience_s=SUBMIT_PATIENCE_S)
        except BaseException as exc:
            if steps is not None:
                await self._drop_stages(steps)
            if isinstance(exc, (StoreFull, StoreUnavailable)):
                raise ServiceBusy(str(exc), self.pipeline.service.retry_after_s) from None
            raise
        if claim is not None:
            self._start(claim, job, steps)
        elif steps is not None:  # the store kept an earlier try's claim: its lease lapses, then a runner takes it up
            await self._drop_stages(steps)
        return job_id

    def _start_stages(self, job: Job) -> list[Any] | None:
        """A slot and the job's started stages if this replica has room now (jobs queued here go first)."""
        if not self._loops or self.room() <= 0:
            return None
        self.pipeline.admission.take()
        return self.pipeline.chain(job, keep_cutout=True)

    async def _drop_stages(self, steps: list[Any]) -> None:
        """Stages started for a job that will not run here: cancel them and free their slot."""
        self.pipeline.cancel(steps)
        await self.pipeline.admission.give_back()

    async def settle(self, timeout_s: float) -> None:
        """After a drain: wait (bounded) for the runs to finish or give their jobs back, then stop."""
        if self._runs:
            await asyncio.wait(list(self._runs.values()), timeout=timeout_s)
        for loop in self._loops:
            loop.cancel()

    # -- taking jobs up --------------------------------------------------------------------------

    async def _claim_due(self) -> None:
        while True:
            await asyncio.sleep(CLAIM_EVERY_S)
            room = self.room()
            if room <= 0 or self.pipeline.admission.draining:
                continue
            for claim in await self._quietly("claim", room) or []:
                logger.info("job %s: taken up (attempt %d)", claim.job_id, claim.attempt)
                self._start(claim)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._renew_every_s)
            if self.leases:
                for job_id in await self._quietly("renew", dict(self.leases)) or []:
                    logger.warning("job %s: lease lost (another runner has it); stopping this run", job_id)
                    if job_id in self._runs:
                        self._runs[job_id].cancel()

    async def _quietly(self, method: str, *args: Any) -> Any:
        """A store call of the background loops: an unavailable store is logged once per outage."""
        try:
            result = await self.store.call(method, *args)
        except StoreUnavailable as exc:
            if not self._store_down:
                logger.warning("job store unavailable (%s); retrying", exc)
            self._store_down = True
            return None
        except Exception:
            logger.exception("job store call %s failed", method)
            return None
        if self._store_down:
            logger.info("job store reachable again")
        self._store_down = False
        return result

    def _start(self, claim: Claim, job: Job | None = None, steps: list[Any] | None = None) -> None:
        """Run a claimed job: from its stored request, or (``steps``) its submission's started stages."""
        self.leases[claim.job_id] = claim.token
        self._renew_every_s = claim.lease_s / 4
        run = asyncio.get_running_loop().create_task(self._run(claim, job, steps))
        self._runs[claim.job_id] = run
        run.add_done_callback(lambda _: self._forget(claim, run))

    def _forget(self, claim: Claim, run: asyncio.Task) -> None:
        if self._runs.get(claim.job_id) is run:  # not a later run of the same job
            del self._runs[claim.job_id]
        if self.leases.get(claim.job_id) == claim.token:
            del self.leases[claim.job_id]

    # -- one run ---------------------------------------------------------------------------------

    async def _run(self, claim: Claim, job: Job | None, steps: list[Any] | None) -> None:
        try:
            if steps is not None:
                await self._admitted(claim, steps)
                return
            if job is None:
                job = await asyncio.to_thread(self._decode, claim.request or b"")
            await self._when_admitted(claim, job)
        except LeaseLost:
            logger.info("job %s: taken over by another runner", claim.job_id)
        except StoreUnavailable as exc:
            logger.warning("job %s: %s; its lease will lapse and another run take it up", claim.job_id, exc)
        except Exception as exc:  # noqa: BLE001 - whatever ends a run is recorded (describe names it)
            reply = describe(exc)
            if reply.status in RETRIED_STATUSES:
                await self._last_word(claim, "release", error=reply.body())
            else:
                await self._last_word(claim, "advance", status="failed", error=reply.body())

    def _decode(self, request: bytes) -> Job:
        """The stored request as a job (checked again: the preset or the limits may have changed)."""
        try:
            return job_from_request(GenerateRequest.model_validate_json(request), self.pipeline.defaults, self.pipeline.service)
        except ValidationError as exc:
            raise first_validation_error(exc) from None

    async def _when_admitted(self, claim: Claim, job: Job) -> None:
        """Wait as ``queued`` for a slot, then run; a drain first gives the job back, still queued."""
        self.waiting += 1
        waiting = True
        try:
            async with self.pipeline.admission.queued():
                self.waiting -= 1
                waiting = False
                await self._stages(claim, self.pipeline.chain(job, keep_cutout=True))
        except ServiceBusy:
            if not waiting:
                raise
            await self._last_word(claim, "release")  # stays queued for the next start; no attempt spent
        finally:
            if waiting:
                self.waiting -= 1

    async def _admitted(self, claim: Claim, steps: list[Any]) -> None:
        """Follow stages started with a slot already taken, then free the slot."""
        try:
            await self._stages(claim, steps)
        finally:
            await self.pipeline.admission.give_back()

    async def _stages(self, claim: Claim, steps: list[Any]) -> None:
        finished = False
        try:
            await self._write(claim, status="running", stage=steps[0].stage)
            await self.pipeline.bounded(self._follow(claim, steps), steps, self.pipeline.service.job_timeout_s)
            finished = True
        finally:
            if not finished:  # lease lost, store gone or cancelled: the stages' work is wasted
                self.pipeline.cancel(steps)

    async def _follow(self, claim: Claim, steps: list[Any]) -> None:
        """Await each stage in turn and write it: timings, the next stage, the files so far."""
        for index, step in enumerate(steps):
            result: Traced = await step.response
            following = steps[index + 1].stage if index + 1 < len(steps) else None
            files = await asyncio.to_thread(stage_files, result.value)
            info = asset_info(result.value) if following is None else None
            await self._write(
                claim,
                status="running" if following else "done",
                stage=following,
                timings=result.timings,
                files=files,
                asset=info,
            )

    async def _write(self, claim: Claim, **changes: Any) -> None:
        await self.store.call("advance", claim.job_id, claim.token, patience_s=WRITE_PATIENCE_S, **changes)

    async def _last_word(self, claim: Claim, method: str, **changes: Any) -> None:
        """A run's end (failed, or given back); if the store cannot take it, the lease lapses instead."""
        try:
            await self.store.call(method, claim.job_id, claim.token, patience_s=WRITE_PATIENCE_S, **changes)
        except (LeaseLost, StoreUnavailable) as exc:
            logger.warning("job %s: its end was not recorded (%s); its lease will lapse", claim.job_id, exc)
