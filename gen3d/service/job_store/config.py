"""The job store's settings: which backend holds the jobs, and the bounds every backend keeps.

They are the ``SharedState`` deployment's ``user_config`` (one place for everything about the
store): ``serve deploy`` with new bounds applies them in place; a new ``job_store`` opens the new
backend (jobs in the old one stay there).
"""

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BackendName = Literal["sqlite", "redis", "memory"]


def default_store_path() -> Path:
    """``$XDG_CACHE_HOME/gen3d/jobs``, else ``~/.cache/gen3d/jobs``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gen3d" / "jobs"


class BackendConfig(BaseModel):
    """Where jobs and their files live.

    Attributes:
        backend: ``sqlite`` (the default: an SQLite file plus one folder of files per job, in
            ``path``; needs no server, for one node), ``redis`` (jobs and files in the Redis at
            ``url``; several nodes or services can share it) or ``memory`` (this process only,
            forgotten on restart: tests only).
        path: the sqlite backend's folder, absolute or ``~/...`` (default: ``default_store_path()``).
        url: the redis backend's server, ``redis://[:password@]host:port/db`` (or ``rediss://``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = "sqlite"
    path: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _fields_fit_the_backend(self) -> "BackendConfig":
        if self.backend == "redis" and not self.url:
            raise ValueError("job_store: backend redis needs url, e.g. {backend: redis, url: redis://host:6379/0}")
        if self.backend != "redis" and self.url:
            raise ValueError(f"job_store: url is for backend redis, not {self.backend}")
        if self.backend != "sqlite" and self.path:
            raise ValueError(f"job_store: path is for backend sqlite (redis keeps files in Redis), not {self.backend}")
        if self.path and not Path(self.path).expanduser().is_absolute():
            raise ValueError(f"job_store: path must be absolute or start with ~ (replicas run elsewhere), got {self.path!r}")
        return self

    def folder(self) -> Path:
        """The sqlite backend's folder, resolved."""
        return Path(self.path).expanduser() if self.path else default_store_path()


class JobStoreConfig(BaseModel):
    """The job store: its backend and its bounds (the ``SharedState`` deployment's ``user_config``).

    Attributes:
        job_store: the backend (``BackendConfig``).
        max_jobs: jobs held at once, finished or not; beyond it ``POST /jobs`` answers 503.
        max_bytes: bytes held at once (requests and files); beyond it new jobs get 503 and a job
            whose file does not fit fails.
        ttl_s: a finished job is forgotten this long after it finished (404 afterwards, its files
            deleted). Unfinished jobs are kept until they finish.
        lease_s: a runner's claim on a job lasts this long unless renewed (it renews every quarter
            of it); a job whose runner died is taken up again this long after its last renewal.
        max_attempts: runs a job gets (runners that died or stages that failed count); after the
            last it fails, naming the last error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_store: BackendConfig = Field(default_factory=BackendConfig)
    max_jobs: int = Field(default=256, gt=0)
    max_bytes: int = Field(default=512 * 2**20, gt=0)
    ttl_s: float = Field(default=3600.0, gt=0)
    lease_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, gt=0)
