"""``SharedState`` deployment: what every ingress replica must see alike, in one replica.

It runs the job store (``gen3d.service.job_store``: SQLite files on this replica's node by
default, or a Redis that several nodes share) and the drain board (one shutdown switch for
every ingress replica). Jobs live in the store's backend, not in this actor: when the replica
restarts, the new one opens the same store and every job is still there. The store's backend
and bounds arrive as ``user_config``: new bounds apply in place, a new backend is opened.
"""

import logging
from dataclasses import asdict
from typing import Any

from ray import serve

from deployments._runtime import route_logs_to_serve
from gen3d.service.drain import DrainBoard
from gen3d.service.job_store import (
    Claim,
    JobStore,
    JobStoreConfig,
    StoredFile,
    open_store,
)

logger = logging.getLogger(__name__)


# No access log: every ingress replica calls it four times a second (heartbeats), which would
# drown the replica log in lines that say nothing.
@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class SharedState:
    """Thin wrapper of ``gen3d.service.job_store.JobStore`` and ``gen3d.service.drain.DrainBoard``."""

    def __init__(self) -> None:
        route_logs_to_serve()
        self.config = JobStoreConfig()
        self._store: JobStore | None = None
        self.drain = DrainBoard()

    async def reconfigure(self, config: dict[str, Any]) -> None:
        new = JobStoreConfig.model_validate(config)
        if self._store is not None and new.job_store == self.config.job_store:
            self._store.reconfigure(new)
        else:
            old, self._store = self._store, self._open(new)
            if old is not None:
                await old.close()
        self.config = new

    @property
    def jobs(self) -> JobStore:
        if self._store is None:  # no user_config: the defaults
            self._store = self._open(self.config)
        return self._store

    @staticmethod
    def _open(config: JobStoreConfig) -> JobStore:
        store = open_store(config)
        logger.info("job store: %s at %s", config.job_store.backend, store.backend.where)
        return store

    # -- jobs ----------------------------------------------------------------------------------

    async def create(self, job_id: str, request: bytes, hold: bool) -> Claim | None:
        return await self.jobs.create(job_id, request, hold)

    async def view(self, job_id: str) -> dict[str, Any]:
        return await self.jobs.view(job_id)

    async def file(self, job_id: str, name: str) -> StoredFile:
        return await self.jobs.file(job_id, name)

    async def wait_for_change(self, job_id: str, seen_version: int, timeout_s: float) -> dict[str, Any]:
        return await self.jobs.wait_for_change(job_id, seen_version, timeout_s)

    async def claim(self, limit: int) -> list[Claim]:
        return await self.jobs.claim(limit)

    async def renew(self, leases: dict[str, str]) -> list[str]:
        return await self.jobs.renew(leases)

    async def advance(self, job_id: str, token: str, **changes: Any) -> None:
        await self.jobs.advance(job_id, token, **changes)

    async def release(self, job_id: str, token: str, error: dict[str, str | None] | None = None) -> None:
        await self.jobs.release(job_id, token, error)

    # -- drain ---------------------------------------------------------------------------------

    def start_drain(self) -> dict[str, Any]:
        self.drain.start()
        return asdict(self.drain.status())

    def drain_status(self) -> dict[str, Any]:
        return asdict(self.drain.status())

    def heartbeat(self, replica: str, in_flight: int) -> bool:
        return self.drain.heartbeat(replica, in_flight)
