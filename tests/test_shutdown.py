"""Graceful shutdown through the launcher (``python -m gen3d.service.launcher``, what ``gen3d serve`` runs).

SIGINT or SIGTERM: the ingress refuses new work with 503 while every request already in flight
gets its complete answer, then Serve stops. (Plain ``serve run`` cannot do this: Serve kills its
HTTP proxy at once on shutdown, cutting open connections.)

To know that all 20 requests are in flight when the signal comes, the image_to_3d replica is
paused (SIGSTOP) while they arrive, and the drain status (the launcher's admin route) must count
20; the replica resumes once the drain has begun.
"""

import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_every_request_in_flight_is_answered_and_new_ones_get_503(tmp_path, signum: signal.Signals) -> None:
    port = free_port()
    config = tmp_path / "serve_tiny.yaml"
    write_serve_config(config, port, {"drain_timeout_s": 60})
    log = tmp_path / "launcher.log"
    token = {"X-Admin-Token": uuid.uuid4().hex}
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "gen3d.service.launcher", str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, ADMIN_TOKEN_ENV: token["X-Admin-Token"]},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, launcher, log)
        stage = ServeAdmin.from_log(log).replica_pid("ImageTo3DDeployment")

        def in_flight() -> int:
            return httpx.get(f"{url}/admin/drain", headers=token, timeout=10).json()["in_flight"]

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            os.kill(stage, signal.SIGSTOP)
            try:
                answers = [pool.submit(request, url, i) for i in range(IN_FLIGHT)]
                wait_for(lambda: in_flight() == IN_FLIGHT, 60, f"{IN_FLIGHT} requests in flight")
                launcher.send_signal(signum)
                status = f"{url}/admin/drain"
                wait_for(lambda: httpx.get(status, headers=token, timeout=10).json()["acknowledged"], 10, "the drain")
                late = httpx.post(f"{url}/generate", json={"prompt": "late"}, timeout=120)
            finally:
                os.kill(stage, signal.SIGCONT)
            results = [answer.result() for answer in answers]
        assert results == [200] * IN_FLIGHT, results
        assert late.status_code == 503 and late.headers["retry-after"], late.text
        assert "shutting down" in late.json()["error"]
        assert launcher.wait(timeout=120) == 0
        assert "drained" in log.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
