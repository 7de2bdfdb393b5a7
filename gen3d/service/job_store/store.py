"""The job store: jobs, their leases and files, bounded and expiring, over any backend.

Everything a job goes through is decided here, once, as a change of its record
(``records.JobRecord``); a backend only stores records and files and applies one change
atomically (``Backend.transact``). So the bounds, the leases, the attempts and the expiry behave
the same on every backend.

Each change bumps the job's ``version`` and wakes the readers waiting in ``wait_for_change``
(the server-sent event stream); a change made elsewhere (another service sharing the backend)
is seen within ``POLL_S``.
"""

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gen3d.imaging import mib
from gen3d.service.job_store.config import JobStoreConfig
from gen3d.service.job_store.records import (
    REQUEST_FILE,
    Claim,
    FileMeta,
    JobRecord,
    LeaseLost,
    StoredFile,
    StoreFull,
    UnknownJob,
)

logger = logging.getLogger(__name__)

#: A reader waiting for a change looks at the backend at least this often (changes made elsewhere).
POLL_S = 0.5
#: Finished jobs past their TTL are deleted (with their files) at most this often.
EXPIRE_EVERY_S = 1.0
#: A job whose run failed for a reason worth retrying waits this long per attempt so far.
RETRY_DELAY_S = 2.0


@dataclass(frozen=True)
class Usage:
    """What the store holds: jobs, finished or not, and bytes of their files."""

    jobs: int
    bytes: int


@dataclass(frozen=True)
class Update:
    """A change's result: the record to write, and the files to write with it."""

    record: JobRecord
    files: dict[str, StoredFile] = field(default_factory=dict)


#: A change: the job's record (None when absent), what the store holds, and the store's time ->
#: what to write, or None to write nothing. It may raise to refuse; then nothing is written.
Change = Callable[[JobRecord | None, Usage, float], Update | None]


class Backend(ABC):
    """Where records and files live. Implementations: memory, sqlite, redis."""

    #: Where the data is, for logs and messages (never a password).
    where: str = ""

    @abstractmethod
    async def now(self) -> float:
        """The store's clock in seconds (all leases and expiry are measured on it)."""

    @abstractmethod
    async def transact(self, job_id: str, change: Change, durable: bool = False) -> JobRecord | None:
        """Apply ``change`` atomically: the record, files and usage it sees are what it replaces.

        Files are written before the record that names them. Returns the record as it now is.
        ``durable``: on disk before this returns, even where other writes are not (a new job;
        everything after it can be recomputed from its request).
        """

    @abstractmethod
    async def load(self, job_id: str) -> JobRecord | None:
        """The job's record, or None."""

    @abstractmethod
    async def read_file(self, job_id: str, name: str) -> bytes | None:
        """One file's bytes, or None."""

    @abstractmethod
    async def due(self, limit: int) -> list[str]:
        """Up to ``limit`` ids of open jobs no longer held, longest due first."""

    @abstractmethod
    async def finished_before(self, cutoff: float) -> list[str]:
        """Ids of jobs that finished before ``cutoff``."""

    @abstractmethod
    async def delete(self, job_id: str) -> None:
        """Remove the job, its files and their bytes from the usage."""

    async def close(self) -> None:
        """Release connections and threads."""


def new_token() -> str:
    """A fresh lease token."""
    return uuid.uuid4().hex


class JobStore:
    """Jobs by id over a ``Backend``, within the bounds of a ``JobStoreConfig``.

    Args:
        cfg: bounds, lease and attempts.
        backend: where the jobs live.
    """

    def __init__(self, cfg: JobStoreConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        self._changed = asyncio.Condition()
        self._generation = 0
        self._expired_at = float("-inf")

    def reconfigure(self, cfg: JobStoreConfig) -> None:
        """New bounds, lease or attempts (same backend); jobs already held are kept."""
        self.cfg = cfg

    async def close(self) -> None:
        await self.backend.close()

    # -- submitting and reading ----------------------------------------------------------------

    async def create(self, job_id: str, request: bytes, hold: bool) -> Claim | None:
        """Write a new queued job with its request; a retry with the same id changes nothing.

        With ``hold`` the caller also claims it at once (its first run) and gets the ``Claim``.

        Raises:
            StoreFull: ``max_jobs`` jobs or ``max_bytes`` bytes are held.
        """
        await self._expire_now_and_then()
        token = new_token() if hold else None
        cfg = self.cfg

        def insert(record: JobRecord | None, usage: Usage, now: float) -> Update | None:
            if record is not None:
                return None
            if usage.jobs >= cfg.max_jobs:
                raise StoreFull(f"the job store holds its maximum of {cfg.max_jobs} jobs")
            if usage.bytes + len(request) > cfg.max_bytes:
                raise StoreFull(f"the job store holds its maximum of {mib(cfg.max_bytes)} of files")
            record = JobRecord(id=job_id, created=now, held_until=now)
            record.files[REQUEST_FILE] = FileMeta(media_type="application/json", bytes=len(request))
            if token is not None:
                record.claim(token, now, cfg.lease_s, cfg.max_attempts)
            return Update(record, {REQUEST_FILE: StoredFile(request, "application/json")})

        stored = await self._write(job_id, insert, durable=True)
        return Claim(job_id, token, 1, cfg.lease_s) if token is not None and stored.token == token else None

    async def view(self, job_id: str) -> dict[str, Any]:
        """The job's public state (``UnknownJob`` if unknown or expired)."""
        record, now = await self._read(job_id)
        return record.view(now)

    async def file(self, job_id: str, name: str) -> StoredFile:
        """One of the job's files (``UnknownJob`` for an unknown job or file name)."""
        record, _ = await self._read(job_id)
        data = await self.backend.read_file(job_id, name) if name in record.files and name != REQUEST_FILE else None
        if data is None:
            raise UnknownJob(f"{job_id}/{name}")
        return StoredFile(data, record.files[name].media_type)

    async def wait_for_change(self, job_id: str, seen_version: int, timeout_s: float) -> dict[str, Any]:
        """The job's view once its version passes ``seen_version``, or after ``timeout_s`` as it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            generation = self._generation
            view = await self.view(job_id)
            remaining = deadline - loop.time()
            if view["version"] > seen_version or remaining <= 0:
                return view
            await self._wait_past(generation, min(remaining, POLL_S))

    async def _wait_past(self, generation: int, timeout_s: float) -> None:
        """Sleep until a write of this store passes ``generation``, or ``timeout_s``."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._generation != generation), timeout_s)
            except TimeoutError:
                pass

    # -- running -------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Claim up to ``limit`` due jobs, oldest first; a job out of attempts fails instead."""
        await self._expire_now_and_then()
        claims = [await self._claim_one(job_id) for job_id in await self.backend.due(limit)]
        return [claim for claim in claims if claim is not None]

    async def _claim_one(self, job_id: str) -> Claim | None:
        token, cfg = new_token(), self.cfg

        def take(record: JobRecord | None, usage: Usage, now: float) -> Update | None:
            if record is None or not record.due(now):
                return None  # another runner was quicker
            record.claim(token, now, cfg.lease_s, cfg.max_attempts)
            return Update(record)

        record = await self._write(job_id, take)
        if record is None or record.token != token:
            return None
        return Claim(job_id, token, record.attempts, cfg.lease_s, await self.backend.read_file(job_id, REQUEST_FILE))

    async def renew(self, leases: dict[str, str]) -> list[str]:
        """Extend each lease (job id -> token); return the ids whose lease is not the runner's any more."""
        return [job_id for job_id, token in leases.items() if not await self._renew_one(job_id, token)]

    async def _renew_one(self, job_id: str, token: str) -> bool:
        lease_s = self.cfg.lease_s

        def extend(record: JobRecord | None, usage: Usage, now: float) -> Update:
            if record is None:
                raise LeaseLost(job_id)
            record.renew(token, now, lease_s)
            return Update(record)

        try:
            await self.backend.transact(job_id, extend)  # nothing a client sees: no version, no wake-up
        except LeaseLost:
            return False
        return True

    async def advance(self, job_id: str, token: str, **changes: Any) -> None:
        """Record one step of a run (``JobRecord.advance`` fields), files first; renews the lease.

        A file that would push the store over ``max_bytes`` fails the job instead (its error
        names the limit).

        Raises:
            LeaseLost: ``token`` no longer holds the job.
        """
        files: dict[str, StoredFile] = changes.get("files") or {}
        cfg = self.cfg

        def step(record: JobRecord | None, usage: Usage, now: float) -> Update:
            if record is None:
                raise LeaseLost(job_id)
            record.check(token)
            added = sum(len(f.data) for f in files.values()) - sum(
                record.files[name].bytes for name in files if name in record.files
            )
            if added > 0 and usage.bytes + added > cfg.max_bytes:
                full = f"the job store is full ({mib(cfg.max_bytes)} of files); retry later"
                record.finish("failed", now, {"error": full, "field": None})
                return Update(record)
            record.advance(now, cfg.lease_s, **changes)
            return Update(record, files)

        await self._write(job_id, step)

    async def release(self, job_id: str, token: str, error: dict[str, str | None] | None = None) -> None:
        """Give a job back: due again at once after a drain, or later after a failed run (``error``)."""

        def give_back(record: JobRecord | None, usage: Usage, now: float) -> Update:
            if record is None:
                raise LeaseLost(job_id)
            record.check(token)
            delay = 0.0 if error is None else RETRY_DELAY_S * record.attempts
            record.release(now, delay, error)
            return Update(record)

        await self._write(job_id, give_back)

    # -- bounds --------------------------------------------------------------------------------

    async def expire(self) -> int:
        """Delete every job finished more than ``ttl_s`` ago, with its files; return how many."""
        now = await self.backend.now()
        expired = await self.backend.finished_before(now - self.cfg.ttl_s)
        for job_id in expired:
            await self.backend.delete(job_id)
        self._expired_at = now
        if expired:
            logger.debug("expired %d finished jobs", len(expired))
        return len(expired)

    async def _expire_now_and_then(self) -> None:
        if await self.backend.now() - self._expired_at >= EXPIRE_EVERY_S:
            await self.expire()

    async def _read(self, job_id: str) -> tuple[JobRecord, float]:
        now = await self.backend.now()
        record = await self.backend.load(job_id)
        if record is None or record.expired(now, self.cfg.ttl_s):
            raise UnknownJob(job_id)
        return record, now

    async def _write(self, job_id: str, change: Change, durable: bool = False) -> JobRecord | None:
        record = await self.backend.transact(job_id, change, durable)
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()
        return record
