"""The redis backend: records and files in one Redis, which several nodes or services can share.

Files live in Redis too, so that nodes share nothing but Redis (a folder shared between nodes
would need a network file system, one more thing to run and to lose); ``max_bytes`` bounds what
they take of Redis's memory. Keys, under ``gen3d:jobs:``: ``job:<id>`` (the record as JSON),
``file:<id>:<name>``, the sorted sets ``due`` (open jobs by ``held_until``) and ``finished`` (by
finish time), and the hash ``usage`` (jobs, bytes). A change is one optimistic transaction
(WATCH the record and the usage, MULTI, EXEC, again on a conflict). Leases are measured on the
Redis server's clock (TIME), so the nodes' clocks need not agree.

How durable a write is depends on the server: run it with ``appendonly yes`` and
``appendfsync always`` (every write on disk before it is acknowledged, ``202`` included), as
``deploy/redis.yaml`` does.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from gen3d.service.job_store.records import JobRecord, StoreUnavailable
from gen3d.service.job_store.store import Backend, Change, Usage

PREFIX = "gen3d:jobs:"
#: Fail fast while Redis is down: the callers retry (and answer 503) on their own terms.
CONNECT_TIMEOUT_S = 2.0
RETRIES = 3


def server_seconds(reply: tuple[int, int]) -> float:
    """Redis TIME's (seconds, microseconds) as seconds."""
    return reply[0] + reply[1] / 1e6


class RedisBackend(Backend):
    """Jobs in the Redis at ``url``.

    Args:
        url: ``redis://[:password@]host:port/db``.
        clock: seconds to use instead of the server's TIME (tests pass a fake one).
    """

    def __init__(self, url: str, clock: Callable[[], float] | None = None) -> None:
        self._url = url
        parts = urlsplit(url)
        self.where = f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"  # no password in messages
        self._clock = clock
        self._redis: redis.asyncio.Redis | None = None

    def _client(self) -> redis.asyncio.Redis:
        # Made on first use, on the event loop that uses it (asyncio connections belong to one loop).
        if self._redis is None:
            self._redis = redis.asyncio.Redis.from_url(
                self._url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=CONNECT_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), RETRIES),
            )
        return self._redis

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"the job store's Redis at {self.where} is unreachable ({type(exc).__name__})") from None

    @staticmethod
    def _key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    async def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        async with self._reachable():
            return server_seconds(await self._client().time())

    async def transact(self, job_id: str, change: Change, durable: bool = False) -> JobRecord | None:
        # How durable any write is, is the server's setting (appendfsync): ``durable`` asks nothing more.
        key, usage = self._key("job", job_id), self._key("usage")
        async with self._reachable(), self._client().pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, usage)
                    raw = await pipe.get(key)
                    jobs, held = await pipe.hmget(usage, "jobs", "bytes")
                    now = self._clock() if self._clock is not None else server_seconds(await pipe.time())
                    current = JobRecord.model_validate_json(raw) if raw else None
                    old_bytes = current.bytes if current else 0  # the change edits ``current`` in place
                    update = change(current, Usage(int(jobs or 0), int(held or 0)), now)
                    if update is None:
                        await pipe.reset()
                        return current
                    record = update.record
                    pipe.multi()
                    for name, stored in update.files.items():
                        pipe.set(self._key("file", job_id, name), stored.data)
                    pipe.set(key, record.model_dump_json())
                    if raw is None:
                        pipe.hincrby(usage, "jobs", 1)
                    pipe.hincrby(usage, "bytes", record.bytes - old_bytes)
                    if record.open:
                        pipe.zadd(self._key("due"), {job_id: record.held_until})
                    else:
                        pipe.zrem(self._key("due"), job_id)
                        pipe.zadd(self._key("finished"), {job_id: record.finished})
                    await pipe.execute()
                    return record
                except WatchError:
                    continue  # another writer came between: read again

    async def load(self, job_id: str) -> JobRecord | None:
        async with self._reachable():
            raw = await self._client().get(self._key("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def read_file(self, job_id: str, name: str) -> bytes | None:
        async with self._reachable():
            return await self._client().get(self._key("file", job_id, name))

    async def due(self, limit: int) -> list[str]:
        now = await self.now()
        async with self._reachable():
            ids = await self._client().zrangebyscore(self._key("due"), "-inf", now, start=0, num=limit)
        return [job_id.decode() for job_id in ids]

    async def finished_before(self, cutoff: float) -> list[str]:
        async with self._reachable():
            ids = await self._client().zrangebyscore(self._key("finished"), "-inf", f"({cutoff}")
        return [job_id.decode() for job_id in ids]

    async def delete(self, job_id: str) -> None:
        key, usage = self._key("job", job_id), self._key("usage")
        async with self._reachable(), self._client().pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    record = JobRecord.model_validate_json(raw) if raw else None
                    pipe.multi()
                    pipe.zrem(self._key("due"), job_id)
                    pipe.zrem(self._key("finished"), job_id)
                    if record is not None:
                        pipe.delete(key, *(self._key("file", job_id, name) for name in record.files))
                        pipe.hincrby(usage, "jobs", -1)
                        pipe.hincrby(usage, "bytes", -record.bytes)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
