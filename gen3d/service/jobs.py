"""The job store: submitted jobs, their stage timeline and their files, bounded and expiring.

Ray-free: ``deployments/state.py`` (``SharedState``) runs one ``JobStore`` in a single-replica deployment that every
ingress replica calls, so a job submitted through one replica can be read through any other.
Each change bumps the job's ``version``; ``wait_for_change`` lets a reader (the server-sent
event stream) sleep until the next one.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "done", "failed"]
FINISHED: tuple[JobStatus, ...] = ("done", "failed")
#: File names a job can hold, by the key ``GET /jobs/{id}`` lists them under.
FILE_KEYS = {"image.png": "image", "cutout.png": "cutout"}
ASSET_KEY = "asset"


class JobStoreConfig(BaseModel):
    """Bounds of the job store (the job store deployment's ``user_config``).

    Attributes:
        max_jobs: jobs held at once, finished or not; beyond it ``POST /jobs`` answers 503.
        max_bytes: file bytes held at once; beyond it new jobs get 503 and a job whose file
            does not fit fails.
        ttl_s: a job is forgotten this long after its last change (404 afterwards).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_jobs: int = Field(default=256, gt=0)
    max_bytes: int = Field(default=512 * 2**20, gt=0)
    ttl_s: float = Field(default=3600.0, gt=0)


class StoreFull(Exception):
    """The store holds ``max_jobs`` jobs or ``max_bytes`` bytes; the caller answers 503."""


class UnknownJob(KeyError):
    """No job with this id: never created, or expired."""


@dataclass(frozen=True)
class StoredFile:
    """A job's file: bytes and media type."""

    data: bytes
    media_type: str


@dataclass
class JobRecord:
    """One job's state; ``version`` grows with every change."""

    id: str
    status: JobStatus = "queued"
    stage: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: dict[str, str | None] | None = None
    files: dict[str, StoredFile] = field(default_factory=dict)
    asset: dict[str, Any] | None = None
    version: int = 0
    touched: float = 0.0

    def view(self) -> dict[str, Any]:
        """The public state (``GET /jobs/{id}`` less the URLs, which the ingress adds)."""
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "timings": dict(self.timings),
            "error": self.error,
            "files": list(self.files),
            "asset": self.asset,
            "version": self.version,
        }


class JobStore:
    """Jobs by id, bounded by count and bytes, forgotten ``ttl_s`` after their last change.

    Args:
        cfg: the bounds.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, cfg: JobStoreConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._jobs: dict[str, JobRecord] = {}
        self._changed = asyncio.Condition()

    def reconfigure(self, cfg: JobStoreConfig) -> None:
        """New bounds; jobs already held stay until they expire."""
        self.cfg = cfg

    @property
    def bytes_held(self) -> int:
        return sum(len(f.data) for job in self._jobs.values() for f in job.files.values())

    def expire(self) -> None:
        """Forget every job unchanged for ``ttl_s``."""
        cutoff = self._clock() - self.cfg.ttl_s
        for job_id in [key for key, job in self._jobs.items() if job.touched < cutoff]:
            del self._jobs[job_id]

    def create(self) -> str:
        """A new queued job's id.

        Raises:
            StoreFull: ``max_jobs`` jobs or ``max_bytes`` bytes are held.
        """
        self.expire()
        if len(self._jobs) >= self.cfg.max_jobs:
            raise StoreFull(f"the job store holds its maximum of {self.cfg.max_jobs} jobs")
        if self.bytes_held >= self.cfg.max_bytes:
            raise StoreFull(f"the job store holds its maximum of {self.cfg.max_bytes / 2**20:.0f} MiB of files")
        job = JobRecord(id=uuid.uuid4().hex, touched=self._clock())
        self._jobs[job.id] = job
        return job.id

    def get(self, job_id: str) -> JobRecord:
        """The job, unless unknown or expired (``UnknownJob``)."""
        self.expire()
        if job_id not in self._jobs:
            raise UnknownJob(job_id)
        return self._jobs[job_id]

    async def update(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        stage: str | None = None,
        timings: dict[str, float] | None = None,
        error: dict[str, str | None] | None = None,
        files: dict[str, StoredFile] | None = None,
        asset: dict[str, Any] | None = None,
    ) -> None:
        """Apply one transition atomically and wake the readers.

        ``stage`` is set as given (None clears it once the job is finished). A file that would
        push the store over ``max_bytes`` fails the job instead (its error names the limit).
        """
        job = self.get(job_id)
        new_files = files or {}
        if new_files and self.bytes_held + sum(len(f.data) for f in new_files.values()) > self.cfg.max_bytes:
            status, stage, new_files = "failed", None, {}
            error = {"error": f"the job store is full ({self.cfg.max_bytes / 2**20:.0f} MiB); retry later", "field": None}
        if status is not None:
            job.status = status
        job.stage = stage
        job.timings.update(timings or {})
        job.files.update(new_files)
        job.error = error if error is not None else job.error
        job.asset = asset if asset is not None else job.asset
        job.version += 1
        job.touched = self._clock()
        async with self._changed:
            self._changed.notify_all()

    def file(self, job_id: str, name: str) -> StoredFile:
        """One of the job's files (``UnknownJob`` for an unknown job or file name)."""
        files = self.get(job_id).files
        if name not in files:
            raise UnknownJob(f"{job_id}/{name}")
        return files[name]

    async def wait_for_change(self, job_id: str, seen_version: int, timeout_s: float) -> dict[str, Any]:
        """The job's view once its version passes ``seen_version``, or after ``timeout_s`` as it is."""

        def moved() -> bool:
            return job_id not in self._jobs or self._jobs[job_id].version > seen_version

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(moved), timeout_s)
            except TimeoutError:
                pass
        return self.get(job_id).view()


def file_key(name: str) -> str:
    """The key a file is listed under: ``image``, ``cutout`` or ``asset``."""
    return FILE_KEYS.get(name, ASSET_KEY)
