"""The durable job store: jobs, their leases and files, over SQLite (default), Redis or memory.

``open_store`` builds the store a ``JobStoreConfig`` names; ``deployments/state.py``
(``SharedState``) runs it for every ingress replica. The logic lives in ``store`` and
``records``, once for every backend; ``memory``, ``sqlite`` and ``redis`` only keep the data.
"""

from gen3d.service.job_store.config import (
    BackendConfig,
    JobStoreConfig,
    default_store_path,
)
from gen3d.service.job_store.records import (
    FINISHED,
    Claim,
    JobStoreError,
    LeaseLost,
    StoredFile,
    StoreFull,
    StoreUnavailable,
    UnknownJob,
    file_key,
)
from gen3d.service.job_store.store import Backend, JobStore


def open_backend(cfg: BackendConfig) -> Backend:
    """The backend ``cfg`` names (Redis's client is imported only when asked for)."""
    if cfg.backend == "redis":
        from gen3d.service.job_store.redis import RedisBackend

        return RedisBackend(cfg.url or "")
    if cfg.backend == "sqlite":
        from gen3d.service.job_store.sqlite import SqliteBackend

        return SqliteBackend(cfg.folder())
    from gen3d.service.job_store.memory import MemoryBackend

    return MemoryBackend()


def open_store(cfg: JobStoreConfig) -> JobStore:
    """A ``JobStore`` over the backend of ``cfg.job_store``, within ``cfg``'s bounds."""
    return JobStore(cfg, open_backend(cfg.job_store))


__all__ = [
    "FINISHED",
    "BackendConfig",
    "Claim",
    "JobStore",
    "JobStoreConfig",
    "JobStoreError",
    "LeaseLost",
    "StoreFull",
    "StoreUnavailable",
    "StoredFile",
    "UnknownJob",
    "default_store_path",
    "file_key",
    "open_store",
]
