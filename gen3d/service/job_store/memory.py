"""The memory backend: records and files in this process's dicts (tests only: a restart forgets them)."""

import time
from collections.abc import Callable

from gen3d.service.job_store.records import JobRecord
from gen3d.service.job_store.store import Backend, Change, Usage


class MemoryBackend(Backend):
    """Jobs in memory. A change runs without awaiting, so it is atomic on the event loop.

    Args:
        clock: wall-clock seconds (tests pass a fake one).
    """

    where = "this process's memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, JobRecord] = {}
        self._files: dict[tuple[str, str], bytes] = {}

    async def now(self) -> float:
        return self._clock()

    async def transact(self, job_id: str, change: Change, durable: bool = False) -> JobRecord | None:
        current = self._records.get(job_id)
        usage = Usage(len(self._records), sum(record.bytes for record in self._records.values()))
        # The change edits a copy: one that refuses halfway leaves the stored record as it was.
        update = change(current.model_copy(deep=True) if current else None, usage, self._clock())
        if update is None:
            return current.model_copy(deep=True) if current else None
        for name, stored in update.files.items():
            self._files[(job_id, name)] = stored.data
        self._records[job_id] = update.record
        return update.record.model_copy(deep=True)

    async def load(self, job_id: str) -> JobRecord | None:
        record = self._records.get(job_id)
        return record.model_copy(deep=True) if record else None

    async def read_file(self, job_id: str, name: str) -> bytes | None:
        return self._files.get((job_id, name))

    async def due(self, limit: int) -> list[str]:
        now = self._clock()
        due = sorted((record.held_until, record.id) for record in self._records.values() if record.due(now))
        return [job_id for _, job_id in due[:limit]]

    async def finished_before(self, cutoff: float) -> list[str]:
        return [r.id for r in self._records.values() if r.finished is not None and r.finished < cutoff]

    async def delete(self, job_id: str) -> None:
        self._records.pop(job_id, None)
        for key in [key for key in self._files if key[0] == job_id]:
            del self._files[key]
