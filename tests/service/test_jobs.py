"""The job store's logic without Ray: lifecycle, bounds, expiry and change notification."""

import asyncio

import pytest

from gen3d.service.jobs import (
    JobStore,
    JobStoreConfig,
    StoredFile,
    StoreFull,
    UnknownJob,
    file_key,
)


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(**bounds: float) -> tuple[JobStore, FakeClock]:
    clock = FakeClock()
    return JobStore(JobStoreConfig(**bounds), clock=clock), clock


def test_lifecycle_records_stages_timings_files_and_the_asset() -> None:
    jobs, _ = store()
    job_id = jobs.create()
    assert jobs.get(job_id).view()["status"] == "queued"
    asyncio.run(jobs.update(job_id, status="running", stage="text_to_image"))
    image = StoredFile(b"png-bytes", "image/png")
    asyncio.run(jobs.update(job_id, status="running", stage="background", timings={"text_to_image": 0.5},
                            files={"image.png": image}))  # fmt: skip
    asset = {"bytes": 3, "faces": 12, "media_type": "model/gltf-binary", "filename": "asset.glb"}
    asyncio.run(jobs.update(job_id, status="done", stage=None, timings={"background": 0.1},
                            files={"asset.glb": StoredFile(b"glb", "model/gltf-binary")}, asset=asset))  # fmt: skip
    view = jobs.get(job_id).view()
    assert view["status"] == "done" and view["stage"] is None
    assert view["timings"] == {"text_to_image": 0.5, "background": 0.1}
    assert view["files"] == ["image.png", "asset.glb"] and view["asset"] == asset
    assert view["version"] == 3
    assert jobs.file(job_id, "image.png") == image
    assert [file_key(name) for name in view["files"]] == ["image", "asset"]


def test_unknown_job_and_unknown_file() -> None:
    jobs, _ = store()
    with pytest.raises(UnknownJob):
        jobs.get("nope")
    job_id = jobs.create()
    with pytest.raises(UnknownJob):
        jobs.file(job_id, "cutout.png")


def test_jobs_expire_after_the_ttl_since_their_last_change() -> None:
    jobs, clock = store(ttl_s=60)
    old, fresh = jobs.create(), jobs.create()
    clock.now += 50
    asyncio.run(jobs.update(fresh, status="running", stage="background"))
    clock.now += 20  # old: 70 s untouched; fresh: 20 s
    with pytest.raises(UnknownJob):
        jobs.get(old)
    assert jobs.get(fresh).status == "running"


def test_count_bound_refuses_new_jobs_until_one_expires() -> None:
    jobs, clock = store(max_jobs=2, ttl_s=60)
    jobs.create()
    jobs.create()
    with pytest.raises(StoreFull, match="2 jobs"):
        jobs.create()
    clock.now += 61
    jobs.create()


def test_byte_bound_fails_the_job_whose_file_does_not_fit_and_refuses_new_jobs() -> None:
    jobs, _ = store(max_bytes=100)
    first, second = jobs.create(), jobs.create()
    asyncio.run(jobs.update(first, status="done", stage=None, files={"asset.glb": StoredFile(b"x" * 80, "m")}))
    asyncio.run(jobs.update(second, status="running", stage="export", files={"asset.glb": StoredFile(b"y" * 40, "m")}))
    failed = jobs.get(second).view()
    assert failed["status"] == "failed" and failed["files"] == []
    assert "full" in failed["error"]["error"]
    asyncio.run(jobs.update(first, status="done", stage=None, files={"cutout.png": StoredFile(b"z" * 20, "m")}))
    with pytest.raises(StoreFull, match="MiB"):
        jobs.create()


def test_wait_for_change_wakes_on_an_update_and_times_out_without_one() -> None:
    jobs, _ = store()
    job_id = jobs.create()

    async def scenario() -> tuple[dict, dict]:
        waiting = asyncio.create_task(jobs.wait_for_change(job_id, 0, timeout_s=5))
        await asyncio.sleep(0.05)
        await jobs.update(job_id, status="running", stage="background")
        woken = await waiting
        unchanged = await jobs.wait_for_change(job_id, woken["version"], timeout_s=0.05)
        return woken, unchanged

    woken, unchanged = asyncio.run(scenario())
    assert woken["version"] == 1 and woken["stage"] == "background"
    assert unchanged["version"] == 1
