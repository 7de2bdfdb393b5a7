"""``gen3d.client.Client`` against the tiny service: generate, jobs with their events and files,
refusals as ``ApiError``, and a 503 retried after the service's own ``Retry-After``."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gen3d.client import ApiError, Client, parse_events
from gen3d.service.api import GenerateRequest, ServiceConfig
from tests.conftest import ServedGraph
from tests.serve_admin import ServeAdmin, redeployed, with_user_config

STAGES = ["text_to_image", "background", "image_to_3d", "export"]


def view(status: str, stage: str | None) -> dict:
    return {"id": "a" * 32, "status": status, "stage": stage, "timings": {}, "error": None, "files": {}, "asset": None}


def test_events_are_parsed_and_keep_alives_skipped() -> None:
    multi_line = [f"data: {line}" for line in json.dumps(view("done", None), indent=1).splitlines()]
    lines = [f"data: {json.dumps(view('running', 'background'))}", "", ": keep-alive", "", *multi_line, ""]
    assert [(v.status, v.stage) for v in parse_events(lines)] == [("running", "background"), ("done", None)]


@pytest.mark.serve
def test_generate_gives_the_file_its_timings_and_faces(served: ServedGraph) -> None:
    with Client(served.url) as client:
        asset = client.generate(GenerateRequest(prompt="a green vase", texture="vertex", seed=2))
        splat = client.generate(GenerateRequest(prompt="a green vase", format="splat"))
    assert asset.media_type == "model/gltf-binary" and asset.data[:4] == b"glTF" and asset.faces > 0
    assert list(asset.timings) == [*STAGES, "total"]
    assert splat.media_type == "application/octet-stream" and splat.faces is None


@pytest.mark.serve
def test_a_job_streams_each_stage_then_serves_its_files(served: ServedGraph) -> None:
    with Client(served.url) as client:
        accepted = client.submit(GenerateRequest(prompt="a brass lamp", format="splat"))
        views = list(client.events(accepted.id))
        final = client.job(accepted.id)
        asset = client.file(accepted.id, "asset.ply")
    assert accepted.status_url == f"/jobs/{accepted.id}"
    assert views[-1] == final and final.status == "done" and final.error is None
    stages = [v.stage for v in views if v.status == "running"]
    assert stages == sorted(set(stages), key=stages.index) and set(stages) <= set(STAGES)
    assert len(asset) == final.asset.bytes and final.files["asset"].endswith("/asset.ply")


@pytest.mark.serve
def test_refusals_raise_the_services_error(served: ServedGraph) -> None:
    with Client(served.url) as client:
        with pytest.raises(ApiError) as refused:
            client.generate(GenerateRequest(prompt="a cube", steps=9))
        with pytest.raises(ApiError) as unknown:
            client.job("0" * 32)
    assert (refused.value.status, refused.value.body.field) == (422, "steps")
    assert str(refused.value).startswith("error 422 (field steps): expected one of")
    assert unknown.value.status == 404


@pytest.fixture
def full_store(served: ServedGraph, tmp_path: Path) -> Iterator[str]:
    """The running app with an empty store of one job at most, which one job then fills."""
    admin = ServeAdmin.from_log(served.log)
    store = {"max_jobs": 1, "job_store": {"backend": "sqlite", "path": str(tmp_path / "jobs")}}

    def ready() -> bool:
        return httpx.get(f"{served.url}/health", timeout=10).status_code == 200

    with redeployed(admin, lambda config: with_user_config(config, "SharedState", **store), ready):
        with Client(served.url) as client:
            first = client.submit(GenerateRequest(prompt="a stool", format="splat"))
            list(client.events(first.id))
        yield served.url


@pytest.mark.serve
def test_503_is_retried_after_the_services_retry_after_a_bounded_number_of_times(full_store: str) -> None:
    waits: list[float] = []
    told: list[tuple[int, int, float]] = []
    with Client(full_store, retries=3, sleep=waits.append, on_retry=lambda *retry: told.append(retry)) as client:
        with pytest.raises(ApiError) as busy:
            client.submit(GenerateRequest(prompt="a chair"))
    retry_after = float(ServiceConfig().retry_after_s)
    assert busy.value.status == 503 and busy.value.retry_after == str(ServiceConfig().retry_after_s)
    assert waits == [retry_after] * 3
    assert told == [(1, 3, retry_after), (2, 3, retry_after), (3, 3, retry_after)]
