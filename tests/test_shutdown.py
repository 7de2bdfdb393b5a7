"""Graceful shutdown through the launcher (``python -m gen3d.service.launcher``, what ``gen3d serve`` runs).

SIGINT or SIGTERM: the ingress refuses new work with 503 while every request already in flight
gets its complete answer, then Serve stops. (Plain ``serve run`` cannot do this: Serve kills its
HTTP proxy at once on shutdown, cutting open connections.)

To know that all 20 requests are in flight when the signal comes, the image_to_3d replica is
paused (SIGSTOP) while they arrive, and the drain status (the launcher's admin route) must count
20; the replica resumes once the drain has begun. Jobs: those running finish, those still queued
stay queued in the job store for the next start.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gen3d.service.job_store import BackendConfig, Claim, JobStoreConfig, open_store
from gen3d.service.launcher import ADMIN_TOKEN_ENV
from tests.conftest import ROOT, free_port, wait_until_ready, write_serve_config
from tests.serve_admin import ServeAdmin, wait_for

pytestmark = pytest.mark.serve
IN_FLIGHT = 20


def request(url: str, index: int) -> int | str:
    try:
        body = {"prompt": f"object {index}", "seed": index, "format": "splat" if index % 2 else "glb"}
        response = httpx.post(f"{url}/generate", json=body, timeout=120)
        return response.status_code if response.content else "empty"
    except httpx.HTTPError as error:
        return type(error).__name__


@dataclass(frozen=True)
class Launched:
    """The tiny service under the launcher: its process, URL, log and admin token header."""

    process: subprocess.Popen
    url: str
    log: Path
    token: dict[str, str]

    def drain_status(self) -> dict:
        return httpx.get(f"{self.url}/admin/drain", headers=self.token, timeout=10).json()


@contextmanager
def launched(folder: Path, service: dict) -> Iterator[Launched]:
    """``python -m gen3d.service.launcher`` on the tiny config with ``service`` settings, ready."""
    port = free_port()
    config = folder / "serve_tiny.yaml"
    write_serve_config(config, port, service)
    log = folder / "launcher.log"
    token = {"X-Admin-Token": uuid.uuid4().hex}
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "gen3d.service.launcher", str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, ADMIN_TOKEN_ENV: token["X-Admin-Token"]},
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", launcher, log)
        yield Launched(launcher, f"http://127.0.0.1:{port}", log, token)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_every_request_in_flight_is_answered_and_new_ones_get_503(tmp_path, signum: signal.Signals) -> None:
    with launched(tmp_path, {"drain_timeout_s": 60}) as service:
        url = service.url
        stage = ServeAdmin.from_log(service.log).replica_pid("ImageTo3DDeployment")
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            os.kill(stage, signal.SIGSTOP)
            try:
                answers = [pool.submit(request, url, i) for i in range(IN_FLIGHT)]
                wait_for(lambda: service.drain_status()["in_flight"] == IN_FLIGHT, 60, f"{IN_FLIGHT} requests in flight")
                service.process.send_signal(signum)
                wait_for(lambda: service.drain_status()["acknowledged"], 10, "the drain")
                late = httpx.post(f"{url}/generate", json={"prompt": "late"}, timeout=120)
            finally:
                os.kill(stage, signal.SIGCONT)
            results = [answer.result() for answer in answers]
        assert results == [200] * IN_FLIGHT, results
        assert late.status_code == 503 and late.headers["retry-after"], late.text
        assert "shutting down" in late.json()["error"]
        assert service.process.wait(timeout=120) == 0
        assert "drained" in service.log.read_text()


JOBS_RUNNING, JOBS_QUEUED = 4, 8


def test_at_a_drain_running_jobs_finish_and_queued_ones_stay_queued_in_the_store(tmp_path: Path) -> None:
    with launched(tmp_path, {"drain_timeout_s": 60, "max_in_flight": JOBS_RUNNING}) as service:
        stage = ServeAdmin.from_log(service.log).replica_pid("ImageTo3DDeployment")
        os.kill(stage, signal.SIGSTOP)
        try:
            bodies = [{"prompt": f"drained {i}", "format": "splat", "seed": i} for i in range(JOBS_RUNNING + JOBS_QUEUED)]
            ids = [httpx.post(f"{service.url}/jobs", json=body, timeout=30).json()["id"] for body in bodies]

            def held() -> bool:
                states = [httpx.get(f"{service.url}/jobs/{job_id}", timeout=30).json()["status"] for job_id in ids]
                return states.count("running") == JOBS_RUNNING and states.count("queued") == JOBS_QUEUED

            wait_for(held, 60, f"{JOBS_RUNNING} jobs running, {JOBS_QUEUED} queued")
            service.process.send_signal(signal.SIGTERM)
            wait_for(lambda: service.drain_status()["acknowledged"], 10, "the drain")
        finally:
            os.kill(stage, signal.SIGCONT)
        assert service.process.wait(timeout=120) == 0

    # The service is gone; its job store is not.
    store = open_store(JobStoreConfig(job_store=BackendConfig(path=str(tmp_path / "jobs"))))

    async def read() -> tuple[list[str], list[Claim]]:
        statuses = [(await store.view(job_id))["status"] for job_id in ids]
        return statuses, await store.claim(limit=len(ids))

    statuses, claims = asyncio.run(read())
    assert statuses == ["done"] * JOBS_RUNNING + ["queued"] * JOBS_QUEUED
    # The next start takes the queued jobs up as their first run, with their requests.
    assert [claim.job_id for claim in claims] == ids[JOBS_RUNNING:] and {claim.attempt for claim in claims} == {1}
    assert [json.loads(claim.request) for claim in claims] == bodies[JOBS_RUNNING:]
