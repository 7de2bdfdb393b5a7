"""The job store's behaviour, the same on every backend: lifecycle, bounds, expiry, leases, attempts."""

import asyncio
from collections.abc import Callable

import pytest

from gen3d.service.job_store import (
    JobStore,
    LeaseLost,
    StoredFile,
    StoreFull,
    UnknownJob,
    file_key,
)
from gen3d.service.job_store.store import RETRY_DELAY_S
from tests.service.job_store.conftest import FakeClock, run

REQUEST = b'{"prompt": "a brass lamp"}'
ASSET = {"bytes": 3, "faces": 12, "media_type": "model/gltf-binary", "filename": "asset.glb"}

MakeStore = Callable[..., JobStore]


async def started(jobs: JobStore, job_id: str = "a") -> str:
    """Create a job and claim it at once (the submitting runner's path); return the lease token."""
    claim = await jobs.create(job_id, REQUEST, hold=True)
    assert claim is not None and claim.attempt == 1
    return claim.token


def test_lifecycle_records_stages_timings_files_and_the_asset(store: MakeStore) -> None:
    async def scenario() -> None:
        jobs = store()
        assert await jobs.create("a", REQUEST, hold=False) is None
        queued = await jobs.view("a")
        assert (queued["status"], queued["stage"], queued["files"], queued["version"]) == ("queued", None, [], 0)
        (claim,) = await jobs.claim(limit=4)
        assert (claim.job_id, claim.attempt, claim.request) == ("a", 1, REQUEST)
        image = StoredFile(b"png-bytes", "image/png")
        await jobs.advance("a", claim.token, status="running", stage="text_to_image")
        await jobs.advance("a", claim.token, status="running", stage="background", timings={"text_to_image": 0.5},
                           files={"image.png": image})  # fmt: skip
        await jobs.advance("a", claim.token, status="done", stage=None, timings={"background": 0.1},
                           files={"asset.glb": StoredFile(b"glb", "model/gltf-binary")}, asset=ASSET)  # fmt: skip
        view = await jobs.view("a")
        assert view["status"] == "done" and view["stage"] is None and view["error"] is None
        assert view["timings"] == {"text_to_image": 0.5, "background": 0.1}
        assert view["files"] == ["image.png", "asset.glb"] and view["asset"] == ASSET
        assert view["version"] == 3
        assert await jobs.file("a", "image.png") == image
        assert [file_key(name) for name in view["files"]] == ["image", "asset"]
        with pytest.raises(UnknownJob):  # the request is kept for runners, never served
            await jobs.file("a", "request.json")
        with pytest.raises(LeaseLost):  # a finished job takes no more writes
            await jobs.advance("a", claim.token, status="running", stage="export")

    run(scenario())


def test_unknown_job_and_unknown_file(store: MakeStore) -> None:
    async def scenario() -> None:
        jobs = store()
        with pytest.raises(UnknownJob):
            await jobs.view("nope")
        await jobs.create("a", REQUEST, hold=False)
        with pytest.raises(UnknownJob):
            await jobs.file("a", "cutout.png")
        with pytest.raises(UnknownJob):
            await jobs.file("nope", "asset.glb")

    run(scenario())


def test_a_retried_create_changes_nothing(store: MakeStore) -> None:
    async def scenario() -> None:
        jobs = store(max_jobs=1)
        token = await started(jobs)
        assert await jobs.create("a", REQUEST, hold=True) is None  # the first one is in, held by its runner
        await jobs.advance("a", token, status="running", stage="background")
        assert (await jobs.view("a"))["status"] == "running"

    run(scenario())


def test_finished_jobs_expire_with_their_files_and_open_ones_stay(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(ttl_s=60, lease_s=1000)
        token = await started(jobs, "done")
        await jobs.advance("done", token, status="done", files={"asset.glb": StoredFile(b"x" * 10, "m")})
        await started(jobs, "open")
        clock.now += 61
        assert await jobs.expire() == 1
        with pytest.raises(UnknownJob):
            await jobs.view("done")
        assert await jobs.backend.read_file("done", "asset.glb") is None  # its bytes are gone too
        assert await jobs.backend.read_file("done", "request.json") is None
        assert (await jobs.view("open"))["status"] == "queued"

    run(scenario())


def test_an_expired_job_answers_unknown_before_it_is_deleted(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(ttl_s=60)
        await jobs.advance("a", await started(jobs), status="failed", error={"error": "x", "field": None})
        clock.now += 61  # nothing has run the expiry yet
        with pytest.raises(UnknownJob):
            await jobs.view("a")

    run(scenario())


def test_count_bound_refuses_new_jobs_until_one_expires(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(max_jobs=2, ttl_s=60)
        for job_id in ("a", "b"):
            await jobs.advance(job_id, await started(jobs, job_id), status="done")
        with pytest.raises(StoreFull, match="2 jobs"):
            await jobs.create("c", REQUEST, hold=False)
        clock.now += 61
        await jobs.create("c", REQUEST, hold=False)

    run(scenario())


def test_byte_bound_fails_the_job_whose_file_does_not_fit_and_refuses_new_jobs(store: MakeStore) -> None:
    async def scenario() -> None:
        jobs = store(max_bytes=100 + 2 * len(REQUEST))
        first, second = await started(jobs, "first"), await started(jobs, "second")
        await jobs.advance("first", first, status="done", files={"asset.glb": StoredFile(b"x" * 80, "m")})
        await jobs.advance("second", second, status="running", stage="export",
                           files={"asset.glb": StoredFile(b"y" * 40, "m")})  # fmt: skip
        failed = await jobs.view("second")
        assert failed["status"] == "failed" and failed["files"] == []
        assert "full" in failed["error"]["error"]
        with pytest.raises(StoreFull, match="MiB"):
            await jobs.create("third", b"z" * 30, hold=False)

    run(scenario())


def test_wait_for_change_wakes_on_a_change_and_times_out_without_one(store: MakeStore) -> None:
    async def scenario() -> tuple[dict, dict]:
        jobs = store()
        token = await started(jobs)
        seen = (await jobs.view("a"))["version"]
        waiting = asyncio.create_task(jobs.wait_for_change("a", seen, timeout_s=5))
        await asyncio.sleep(0.05)
        await jobs.advance("a", token, status="running", stage="background")
        woken = await asyncio.wait_for(waiting, 1)  # well before the poll would have seen it
        unchanged = await jobs.wait_for_change("a", woken["version"], timeout_s=0.05)
        return woken, unchanged

    woken, unchanged = run(scenario())
    assert woken["stage"] == "background" and unchanged["version"] == woken["version"]


# -- leases and attempts ------------------------------------------------------------------------


def test_a_lapsed_lease_reads_queued_and_another_runner_takes_the_job_over(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(lease_s=10)
        first = await started(jobs)
        await jobs.advance("a", first, status="running", stage="image_to_3d", timings={"background": 0.2},
                           files={"cutout.png": StoredFile(b"cut", "image/png")})  # fmt: skip
        assert await jobs.claim(limit=4) == []  # held
        clock.now += 11  # the runner died: no renewal
        lapsed = await jobs.view("a")
        assert (lapsed["status"], lapsed["stage"]) == ("queued", None)  # never running without a live lease
        (second,) = await jobs.claim(limit=4)
        assert second.attempt == 2 and second.request == REQUEST
        rerun = await jobs.view("a")
        assert rerun["timings"] == {} and rerun["files"] == ["cutout.png"]  # a fresh timeline; files stay
        with pytest.raises(LeaseLost):  # the first runner, back from a stall, cannot write any more
            await jobs.advance("a", first, status="done")
        assert await jobs.renew({"a": first}) == ["a"]
        await jobs.advance("a", second.token, status="done")
        assert (await jobs.view("a"))["status"] == "done"

    run(scenario())


def test_renewing_keeps_the_job_held(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(lease_s=10)
        token = await started(jobs)
        await jobs.advance("a", token, status="running", stage="background")
        for _ in range(3):
            clock.now += 8
            assert await jobs.renew({"a": token}) == []
        assert (await jobs.view("a"))["status"] == "running"
        assert await jobs.claim(limit=4) == []
        assert await jobs.renew({"gone": "token"}) == ["gone"]

    run(scenario())


def test_a_job_that_keeps_losing_its_runner_fails_naming_why(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(lease_s=10, max_attempts=2)
        await started(jobs)
        clock.now += 11
        (second,) = await jobs.claim(limit=4)
        assert second.attempt == 2
        clock.now += 11
        assert await jobs.claim(limit=4) == []  # out of attempts: failed, not claimed
        failed = await jobs.view("a")
        assert failed["status"] == "failed" and failed["stage"] is None
        assert failed["error"]["error"].startswith("gave up after 2 attempts")
        assert "runner stopped" in failed["error"]["error"]

    run(scenario())


def test_a_failed_run_waits_and_counts_and_the_last_error_is_reported(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store(max_attempts=2)
        error = {"error": "stage image_to_3d failed: ActorDiedError", "field": "image_to_3d"}
        await jobs.release("a", await started(jobs), error=error)
        assert (await jobs.view("a"))["status"] == "queued"
        assert await jobs.claim(limit=4) == []  # waits before it is due again
        clock.now += RETRY_DELAY_S
        (second,) = await jobs.claim(limit=4)
        await jobs.release("a", second.token, error=error)
        clock.now += 2 * RETRY_DELAY_S
        assert await jobs.claim(limit=4) == []
        failed = await jobs.view("a")
        assert failed["status"] == "failed" and failed["error"]["field"] == "image_to_3d"
        assert failed["error"]["error"] == f"gave up after 2 attempts; the last: {error['error']}"

    run(scenario())


def test_a_drained_job_is_due_at_once_and_its_attempt_does_not_count(store: MakeStore) -> None:
    async def scenario() -> None:
        jobs = store(max_attempts=1)
        with pytest.raises(LeaseLost):
            await jobs.release("a", "not-a-token")
        await jobs.release("a", await started(jobs))
        (again,) = await jobs.claim(limit=4)
        assert again.attempt == 1

    run(scenario())


def test_claims_come_oldest_first_up_to_the_limit(store: MakeStore, clock: FakeClock) -> None:
    async def scenario() -> None:
        jobs = store()
        for job_id in ("a", "b", "c"):
            await jobs.create(job_id, REQUEST, hold=False)
            clock.now += 1
        assert [claim.job_id for claim in await jobs.claim(limit=2)] == ["a", "b"]
        assert [claim.job_id for claim in await jobs.claim(limit=2)] == ["c"]

    run(scenario())
