"""What only the durable backends promise: jobs survive a reopen (SQLite) and a server restart
(Redis); a crash's leftovers are swept; an unreachable Redis is ``StoreUnavailable``, not a crash."""

import os
import sqlite3
import time
from pathlib import Path

import pytest

from gen3d.service.job_store import (
    JobStore,
    JobStoreConfig,
    StoredFile,
    StoreUnavailable,
    UnknownJob,
    open_store,
)
from gen3d.service.job_store.config import BackendConfig
from gen3d.service.job_store.redis import RedisBackend
from gen3d.service.job_store.sqlite import ORPHAN_AGE_S, SqliteBackend
from tests.conftest import free_port
from tests.redis_server import RedisServer
from tests.service.job_store.conftest import FakeClock, run

REQUEST = b'{"prompt": "a brass lamp"}'


async def half_done(jobs: JobStore) -> str:
    """A job with its image written, mid-run; returns its lease token."""
    claim = await jobs.create("a", REQUEST, hold=True)
    await jobs.advance("a", claim.token, status="running", stage="background", timings={"text_to_image": 0.5},
                       files={"image.png": StoredFile(b"png", "image/png")})  # fmt: skip
    return claim.token


async def reopened_view(jobs: JobStore) -> tuple[dict, bytes, bytes | None]:
    view = await jobs.view("a")
    image = (await jobs.file("a", "image.png")).data
    (claim,) = await jobs.claim(limit=1)  # the lease of the lost runner lapses; the request is there
    await jobs.close()
    return view, image, claim.request


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_job_and_its_files_survive_reopening_the_store(backend: str, tmp_path: Path, request) -> None:
    clock = FakeClock()
    if backend == "redis":
        server = RedisServer(tmp_path / "redis")
        server.start()
        request.addfinalizer(server.stop)
        server.stop()
        server.start()  # an empty server first: the data below must come back from its file

        def opened() -> JobStore:
            return JobStore(JobStoreConfig(lease_s=10), RedisBackend(server.url, clock=clock))
    else:

        def opened() -> JobStore:
            return JobStore(JobStoreConfig(lease_s=10), SqliteBackend(tmp_path / "jobs", clock=clock))

    async def before() -> None:
        jobs = opened()
        await half_done(jobs)
        await jobs.close()

    run(before())
    if backend == "redis":
        server.stop()
        server.start()
    clock.now += 11
    view, image, kept_request = run(reopened_view(opened()))
    assert view["status"] == "queued" and view["timings"] == {"text_to_image": 0.5} and image == b"png"
    assert kept_request == REQUEST


def test_sqlite_sweeps_folders_no_job_names_and_deletes_expired_files(tmp_path: Path) -> None:
    clock = FakeClock()
    folder = tmp_path / "jobs"
    SqliteBackend(folder, clock=clock)
    stale, fresh = folder / "files" / "crashed", folder / "files" / "being-written"
    for leftover in (stale, fresh):
        leftover.mkdir()
        (leftover / "request.json").write_bytes(REQUEST)
    old = time.time() - ORPHAN_AGE_S - 1
    os.utime(stale, (old, old))

    async def scenario() -> None:
        jobs = JobStore(JobStoreConfig(ttl_s=5), SqliteBackend(folder, clock=clock))
        claim = await jobs.create("a", REQUEST, hold=True)
        await jobs.advance("a", claim.token, status="done", files={"asset.glb": StoredFile(b"glb", "m")})
        assert (folder / "files" / "a" / "asset.glb").read_bytes() == b"glb"
        clock.now += 6
        await jobs.expire()
        with pytest.raises(UnknownJob):
            await jobs.view("a")
        await jobs.close()

    run(scenario())
    assert not stale.exists() and fresh.exists()  # a folder younger than a minute may be mid-create
    assert not (folder / "files" / "a").exists()


def test_an_unreachable_redis_is_store_unavailable() -> None:
    jobs = open_store(JobStoreConfig(job_store=BackendConfig(backend="redis", url=f"redis://127.0.0.1:{free_port()}/0")))

    async def scenario() -> None:
        for call in (jobs.view("a"), jobs.create("a", REQUEST, hold=False), jobs.claim(limit=1)):
            with pytest.raises(StoreUnavailable, match=r"Redis at 127\.0\.0\.1:\d+/0 is unreachable"):
                await call
        await jobs.close()

    run(scenario())


def test_sqlite_runs_a_finished_job_again_when_a_machine_crash_lost_its_file(tmp_path: Path) -> None:
    clock, folder = FakeClock(), tmp_path / "jobs"

    async def finish() -> None:
        jobs = JobStore(JobStoreConfig(), SqliteBackend(folder, clock=clock))
        claim = await jobs.create("a", REQUEST, hold=True)
        await jobs.advance("a", claim.token, status="done", files={"asset.glb": StoredFile(b"glb-bytes", "m")})
        await jobs.close()

    run(finish())
    (folder / "files" / "a" / "asset.glb").write_bytes(b"glb")  # what a power cut left of an unsynced file

    async def reopened() -> tuple[dict, list]:
        jobs = JobStore(JobStoreConfig(), SqliteBackend(folder, clock=clock))
        view, claims = await jobs.view("a"), await jobs.claim(limit=1)
        await jobs.close()
        return view, claims

    view, claims = run(reopened())
    assert (view["status"], view["files"], view["asset"]) == ("queued", [], None)
    assert [(claim.job_id, claim.request) for claim in claims] == [("a", REQUEST)]  # the request was synced


def test_sqlite_refuses_a_folder_written_with_another_layout(tmp_path: Path) -> None:
    SqliteBackend(tmp_path / "jobs")
    database = sqlite3.connect(tmp_path / "jobs" / "jobs.sqlite3")
    database.execute("PRAGMA user_version = 0")
    database.close()
    with pytest.raises(ValueError, match="layout 0, not 1: move it away"):
        SqliteBackend(tmp_path / "jobs")
