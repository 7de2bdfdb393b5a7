"""One ``JobStore`` per backend (memory, sqlite, redis) on a clock the test moves by hand."""

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gen3d.service.job_store import JobStore, JobStoreConfig
from gen3d.service.job_store.memory import MemoryBackend
from gen3d.service.job_store.redis import RedisBackend
from gen3d.service.job_store.sqlite import SqliteBackend
from gen3d.service.job_store.store import Backend
from tests.redis_server import RedisServer

BACKENDS = ("memory", "sqlite", "redis")


class FakeClock:
    """Seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(scenario)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Callable[[], Backend]:
    """Opens the backend ``request.param`` names, each call on the same data (an empty store at first)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis.Redis(port=server.port).flushdb()
        return lambda: RedisBackend(server.url, clock=clock)
    if request.param == "sqlite":
        return lambda: SqliteBackend(tmp_path / "jobs", clock=clock)
    memory = MemoryBackend(clock)
    return lambda: memory


@pytest.fixture
def store(backend: Callable[[], Backend]) -> Callable[..., JobStore]:
    """``store(**bounds)``: a ``JobStore`` over the backend with these bounds."""
    return lambda **bounds: JobStore(JobStoreConfig(**bounds), backend())
