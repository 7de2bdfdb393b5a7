"""One job as the store keeps it, and every change a job goes through, as pure functions of time.

A job is *held* until ``held_until``: by a runner's lease (``token`` set) or, after a failed run,
by a retry delay. A job that is not finished and not held is due: any runner may claim it. Every
write of a runner carries its lease token, and a token that is no longer the job's is refused
(``LeaseLost``), so a runner that lost its job (it stalled, and another runner took the job
over) can never overwrite the new run's state.
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "done", "failed"]
FINISHED: tuple[JobStatus, ...] = ("done", "failed")
#: The request a job was submitted with, kept beside its files so that any runner can run it.
REQUEST_FILE = "request.json"
#: File names a job can show, by the key ``GET /jobs/{id}`` lists them under (anything else is the asset).
FILE_KEYS = {"image.png": "image", "cutout.png": "cutout"}
ASSET_KEY = "asset"
#: What a job that ran out of attempts last suffered when its runner vanished without a word.
RUNNER_LOST = "its runner stopped before the job finished (the lease lapsed)"


class JobStoreError(Exception):
    """Base of the store's expected refusals (none of them is a bug)."""


class StoreFull(JobStoreError):
    """The store holds ``max_jobs`` jobs or ``max_bytes`` bytes; the caller answers 503."""


class UnknownJob(JobStoreError):
    """No job with this id (never created, or expired), or no such file."""


class LeaseLost(JobStoreError):
    """The runner's lease token is no longer the job's: another runner has it, or it finished."""


class StoreUnavailable(JobStoreError):
    """The backend cannot be reached now (Redis down, the store's replica restarting); retry later."""


def file_key(name: str) -> str:
    """The key a file is listed under: ``image``, ``cutout`` or ``asset``."""
    return FILE_KEYS.get(name, ASSET_KEY)


@dataclass(frozen=True)
class StoredFile:
    """A job's file: bytes and media type."""

    data: bytes
    media_type: str


@dataclass(frozen=True)
class Claim:
    """A job a runner now holds: run it, renewing the lease, until it finishes or is released.

    Attributes:
        job_id: the job.
        token: the lease token every write of this run must carry.
        attempt: which run this is (1 for the first).
        lease_s: how long the lease lasts unless renewed.
        request: the submitted request (``REQUEST_FILE``), or None where the claimer has it.
    """

    job_id: str
    token: str
    attempt: int
    lease_s: float
    request: bytes | None = None


class FileMeta(BaseModel):
    """What the record keeps about one file (its bytes live in the backend's file storage)."""

    media_type: str
    bytes: int


class JobRecord(BaseModel):
    """One job's state; ``version`` grows with every change a client can see.

    Times are seconds of the store's clock (wall-clock time, or the Redis server's).
    """

    id: str
    status: JobStatus = "queued"
    stage: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error: dict[str, str | None] | None = None
    files: dict[str, FileMeta] = Field(default_factory=dict)
    asset: dict[str, Any] | None = None
    version: int = 0
    created: float
    finished: float | None = None
    attempts: int = 0
    token: str | None = None
    held_until: float
    last_error: dict[str, str | None] | None = None

    # -- reading ------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Not finished yet."""
        return self.finished is None

    @property
    def bytes(self) -> int:
        """Bytes of its files (the request included)."""
        return sum(meta.bytes for meta in self.files.values())

    def due(self, now: float) -> bool:
        """Open and not held: a runner may claim it."""
        return self.open and self.held_until <= now

    def expired(self, now: float, ttl_s: float) -> bool:
        """Finished more than ``ttl_s`` ago."""
        return self.finished is not None and now - self.finished > ttl_s

    def view(self, now: float) -> dict[str, Any]:
        """The public state (``GET /jobs/{id}`` less the URLs, which the ingress adds).

        A job is ``running`` only while its runner's lease is live: a job whose runner vanished
        reads ``queued`` until another runner takes it up.
        """
        lapsed = self.status == "running" and (self.token is None or self.held_until <= now)
        return {
            "id": self.id,
            "status": "queued" if lapsed else self.status,
            "stage": None if lapsed else self.stage,
            "timings": dict(self.timings),
            "error": self.error,
            "files": [name for name in self.files if name != REQUEST_FILE],
            "asset": self.asset,
            "version": self.version,
        }

    # -- changes (each returns nothing and edits the record; the store writes it back) ---------

    def claim(self, token: str, now: float, lease_s: float, max_attempts: int) -> bool:
        """Start a new run under ``token``; once ``max_attempts`` runs are spent, fail instead (False)."""
        if self.token is not None:  # claimed while held by a lease that lapsed: its runner is gone
            self.last_error = {"error": RUNNER_LOST, "field": None}
        if self.attempts >= max_attempts:
            last = (self.last_error or {}).get("error") or RUNNER_LOST
            field = (self.last_error or {}).get("field")
            self.finish("failed", now, {"error": f"gave up after {self.attempts} attempts; the last: {last}", "field": field})
            return False
        if self.attempts:  # a re-run starts its timeline afresh; the files it rewrites come out the same
            self.status, self.stage, self.timings = "queued", None, {}
            self.version += 1
        self.attempts += 1
        self.token, self.held_until = token, now + lease_s
        return True

    def check(self, token: str) -> None:
        """``LeaseLost`` unless ``token`` holds this open job."""
        if self.token != token or not self.open:
            raise LeaseLost(f"job {self.id} is no longer held by this runner")

    def renew(self, token: str, now: float, lease_s: float) -> None:
        """Extend the lease (``LeaseLost`` if it is not ``token``'s any more)."""
        self.check(token)
        self.held_until = now + lease_s

    def advance(
        self,
        now: float,
        lease_s: float,
        *,
        status: JobStatus | None = None,
        stage: str | None = None,
        timings: dict[str, float] | None = None,
        files: dict[str, StoredFile] | None = None,
        asset: dict[str, Any] | None = None,
        error: dict[str, str | None] | None = None,
    ) -> None:
        """Record one step of the run (the caller checked the token): ``stage`` is set as given."""
        self.timings.update(timings or {})
        self.files.update({name: FileMeta(media_type=f.media_type, bytes=len(f.data)) for name, f in (files or {}).items()})
        self.asset = asset if asset is not None else self.asset
        if status in FINISHED:
            self.finish(status, now, error if error is not None else self.error)
            return
        self.status, self.stage, self.held_until = status or self.status, stage, now + lease_s
        self.version += 1

    def release(self, now: float, delay_s: float, error: dict[str, str | None] | None) -> None:
        """Give the job back, due again after ``delay_s``.

        With an ``error`` (a failed run) the attempt counts and the error is kept for the final
        report; without one (a drain) it does not.
        """
        if error is None:
            self.attempts -= 1
        else:
            self.last_error = error
        self.status, self.stage, self.token, self.held_until = "queued", None, None, now + delay_s
        self.version += 1

    def lost(self, names: set[str], now: float) -> None:
        """Forget files that never reached the disk (a machine crash); a finished job that lost one
        runs again (it gives the same files), as a job that lost its runner does."""
        for name in names:
            del self.files[name]
        if self.status == "done":
            self.status, self.stage, self.asset, self.finished = "queued", None, None, None
            self.token, self.held_until = None, now
        self.version += 1

    def finish(self, status: JobStatus, now: float, error: dict[str, str | None] | None) -> None:
        """End the job as ``done`` or ``failed`` (with ``error``); it expires ``ttl_s`` from now."""
        self.status, self.stage, self.error = status, None, error
        self.token, self.finished, self.held_until = None, now, now
        self.version += 1
