"""``SharedState`` deployment: what every ingress replica must see alike, in one replica.

It holds the job store (a job submitted through one ingress replica is read through any
other) and the drain board (one shutdown switch for all of them). A single replica (an actor)
keeps both in memory: a restart forgets the jobs, which then answer 404. The store's bounds
arrive as ``user_config``: changing them restarts nothing.
"""

from dataclasses import asdict
from typing import Any

from ray import serve

from deployments._runtime import route_logs_to_serve
from gen3d.service.drain import DrainBoard
from gen3d.service.jobs import JobStore, JobStoreConfig, StoredFile


# No access log: every ingress replica calls it four times a second (heartbeats), which would
# drown the replica log in lines that say nothing.
@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class SharedState:
    """Thin wrapper of ``gen3d.service.jobs.JobStore`` and ``gen3d.service.drain.DrainBoard``."""

    def __init__(self) -> None:
        route_logs_to_serve()
        self.jobs = JobStore(JobStoreConfig())
        self.drain = DrainBoard()

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.jobs.reconfigure(JobStoreConfig.model_validate(config))

    # -- jobs ----------------------------------------------------------------------------------

    def create(self) -> str:
        return self.jobs.create()

    def view(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get(job_id).view()

    async def update(self, job_id: str, **changes: Any) -> None:
        await self.jobs.update(job_id, **changes)

    def file(self, job_id: str, name: str) -> StoredFile:
        return self.jobs.file(job_id, name)

    async def wait_for_change(self, job_id: str, seen_version: int, timeout_s: float) -> dict[str, Any]:
        return await self.jobs.wait_for_change(job_id, seen_version, timeout_s)

    # -- drain ---------------------------------------------------------------------------------

    def start_drain(self) -> dict[str, Any]:
        self.drain.start()
        return asdict(self.drain.status())

    def drain_status(self) -> dict[str, Any]:
        return asdict(self.drain.status())

    def heartbeat(self, replica: str, in_flight: int) -> bool:
        return self.drain.heartbeat(replica, in_flight)
