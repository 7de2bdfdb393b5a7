"""A job answered 202 is never lost: chaos on the tiny service (CPU), each with 24 jobs.

Every test submits its jobs while the image_to_3d replica is paused (SIGSTOP, the tests' pause
hook), so that ``RUNNING`` of them are held mid-stage and the rest wait, queued; then it breaks
something and lets the replica go on:

- kill -9 the ingress replica that runs them (Serve restarts it; the leases lapse; it takes the
  jobs up again);
- kill -9 the job store's replica (SQLite: Serve restarts it on the same files);
- SIGKILL every process of the service, then start it again on the same job store;
- stop the job store's Redis mid-run, then start it again.

Each ends with every job ``done`` with its files or ``failed`` with a reason; none answers 404
or stays ``running``. The time from the fault until every job has finished is each test's
recovery time (written to ``$GEN3D_CHAOS_REPORT`` as JSON lines when set). The tests share one
service, started once and once more after the whole-service kill.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gen3d.service.launcher import sigint_by_default
from tests.conftest import (
    FIXTURES,
    ROOT,
    free_port,
    wait_until_ready,
    write_serve_config,
)
from tests.redis_server import RedisServer
from tests.serve_admin import ServeAdmin, redeployed, wait_for, with_user_config

pytestmark = pytest.mark.serve
JOBS = 24
#: Jobs an ingress replica runs at once (max_in_flight): the rest wait queued.
RUNNING = 8
TIMEOUT = 30
FINISH_S = 300


def bodies() -> list[dict]:
    """Mostly splats (the cheapest path) and some small textured GLBs; text prompts, and every
    fourth an image (those skip FLUX, whose batches may shape an image; see the first test)."""
    image = base64.b64encode((FIXTURES / "chair.png").read_bytes()).decode()
    made = []
    for i in range(JOBS):
        source = {"image": image} if i % 4 == 1 else {"prompt": f"chaos object {i}"}
        made.append({**source, "seed": i, **({"texture_size": 256} if i % 8 in (0, 1) else {"format": "splat"})})
    return made


@dataclass
class Service:
    """The tiny service under ``serve run`` in a session of its own, on a fixed port and job store.

    Attributes:
        config: its serve config.
        port: its HTTP port.
        process: the running ``serve run``.
        starts: how often it was started (each start logs to a file of its own).
    """

    config: Path
    port: int
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.config.parent / f"serve-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ray.serve.scripts", "run", str(self.config)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=sigint_by_default,  # stopped with SIGINT, however the tests were started
            )  # fmt: skip
        wait_until_ready(self.url, self.process, self.log)

    def admin(self) -> ServeAdmin:
        return ServeAdmin.from_log(self.log)

    def kill(self) -> None:
        """SIGKILL its process group, then every other process of its session (Ray's workers)."""
        assert self.process is not None
        session = self.process.pid
        os.killpg(session, signal.SIGKILL)
        self.process.wait()
        for pid in session_pids(session):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not session_pids(session), 30, "every process of the killed service gone")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def session_pids(session: int) -> list[int]:
    """Processes whose session id is ``session`` (field 6 of /proc/<pid>/stat), zombies aside."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("chaos")
    port = free_port()
    write_serve_config(folder / "serve.yaml", port, {"max_in_flight": RUNNING, "job_timeout_s": FINISH_S})
    running = Service(folder / "serve.yaml", port)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """The replica ``pid`` stopped (SIGSTOP) for the block, then running again."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # killed with its service meanwhile
            pass


def replaced(admin: ServeAdmin, deployment: str, pid: int) -> bool:
    """Whether one replica of ``deployment`` runs again, in another process than ``pid``."""
    try:
        return admin.replica_pid(deployment) != pid
    except RuntimeError:  # none running yet
        return False


def submit_all(url: str) -> tuple[list[str], dict[str, dict]]:
    ids, sent = [], {}
    for body in bodies():
        answer = httpx.post(f"{url}/jobs", json=body, timeout=TIMEOUT)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
        sent[ids[-1]] = body
    return ids, sent


def states(url: str, ids: list[str]) -> dict[str, dict]:
    return {job_id: httpx.get(f"{url}/jobs/{job_id}", timeout=TIMEOUT).json() for job_id in ids}


def held_mid_stage(url: str, ids: list[str]) -> None:
    """Wait until ``RUNNING`` jobs wait in the paused image_to_3d stage and the rest are queued."""

    def held() -> bool:
        now = Counter((state["status"], state["stage"]) for state in states(url, ids).values())
        return now[("running", "image_to_3d")] == RUNNING and now[("queued", None)] == JOBS - RUNNING

    wait_for(held, 120, f"{RUNNING} jobs held in image_to_3d, {JOBS - RUNNING} queued", poll_s=1.0)


@dataclass
class Outcome:
    """How the jobs ended after a fault.

    Attributes:
        final: each job's last state.
        missing: ids that answered 404 at some point.
        answers: how the status polls were answered meanwhile (status code or error name).
        recovery_s: from the fault until every job had finished.
    """

    final: dict[str, dict] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    answers: Counter = field(default_factory=Counter)
    recovery_s: float = 0.0


def follow(url: str, ids: list[str], fault_at: float) -> Outcome:
    """Poll every unfinished job once a second until all have finished (or ``FINISH_S``)."""
    outcome = Outcome()
    deadline = time.monotonic() + FINISH_S
    with httpx.Client(timeout=TIMEOUT) as client:
        while len(outcome.final) < len(ids) and time.monotonic() < deadline:
            for job_id in [job_id for job_id in ids if job_id not in outcome.final]:
                try:
                    answer = client.get(f"{url}/jobs/{job_id}")
                except httpx.HTTPError as error:
                    outcome.answers[type(error).__name__] += 1
                    continue
                outcome.answers[answer.status_code] += 1
                if answer.status_code == 404:
                    outcome.missing.add(job_id)
                elif answer.status_code == 200 and answer.json()["status"] in ("done", "failed"):
                    outcome.final[job_id] = answer.json()
            time.sleep(1.0)
    outcome.recovery_s = time.monotonic() - fault_at
    return outcome


def check_and_report(scenario: str, url: str, ids: list[str], outcome: Outcome, **facts: float) -> None:
    """Every job done with its files, or failed with a reason; none lost. Logs the numbers."""
    unfinished = {job_id: state["status"] for job_id, state in states(url, ids).items() if job_id not in outcome.final}
    statuses = Counter(state["status"] for state in outcome.final.values())
    report = {"scenario": scenario, "jobs": len(ids), **statuses, "recovery_s": round(outcome.recovery_s, 1),
              **{key: round(value, 1) for key, value in facts.items()},
              "poll_answers": {str(key): count for key, count in outcome.answers.items()}}  # fmt: skip
    print(f"\nchaos {json.dumps(report)}")
    if os.environ.get("GEN3D_CHAOS_REPORT"):
        with open(os.environ["GEN3D_CHAOS_REPORT"], "a") as out:
            out.write(json.dumps(report) + "\n")
    assert not outcome.missing, f"jobs answered 404: {sorted(outcome.missing)}"
    assert not unfinished, f"jobs not finished within {FINISH_S} s: {unfinished}"
    for job_id, state in outcome.final.items():
        if state["status"] == "failed":
            assert state["error"]["error"], f"job {job_id} failed without a reason"
            continue
        asset = httpx.get(url + state["files"]["asset"], timeout=TIMEOUT)
        assert asset.status_code == 200 and len(asset.content) == state["asset"]["bytes"]
        assert {"cutout", "asset"} <= set(state["files"])


def assert_not_lost_meanwhile(url: str, job_id: str) -> None:
    """While the store is away a job reads as it is (the store came back in time) or 503, never 404."""
    answer = httpx.get(f"{url}/jobs/{job_id}", timeout=TIMEOUT)
    assert answer.status_code == 200 or (answer.status_code == 503 and answer.headers["retry-after"]), answer.text


def run_through(service: Service, fault: Callable[[ServeAdmin, str], float], scenario: str) -> tuple[list[str], dict]:
    """Submit the jobs with image_to_3d paused, hold them mid-stage, fault, resume; check the end.

    ``fault(admin, a job id)`` breaks something and returns extra seconds to report (or 0); the
    stage goes on right after it.
    """
    admin = service.admin()
    with paused(admin.replica_pid("ImageTo3DDeployment")):
        ids, sent = submit_all(service.url)
        held_mid_stage(service.url, ids)
        fault_at = time.monotonic()
        extra = fault(admin, ids[0])
    outcome = follow(service.url, ids, fault_at)
    check_and_report(scenario, service.url, ids, outcome, **({"outage_s": extra} if extra else {}))
    return ids, sent


def test_killing_the_ingress_replica_loses_no_job_and_reruns_give_the_same_assets(service: Service) -> None:
    def kill_ingress(admin: ServeAdmin, _: str) -> float:
        os.kill(admin.replica_pid("Ingress"), signal.SIGKILL)
        return 0.0

    ids, sent = run_through(service, kill_ingress, "kill -9 ingress replica")
    # Re-running is deterministic: a re-run job's asset is /generate's for the same request. Image
    # prompts: a FLUX batch of concurrent requests may shape its images (the FLUX batching tests').
    for job_id in (ids[1], ids[5]):  # a textured GLB and a splat, both held when the ingress died
        state = httpx.get(f"{service.url}/jobs/{job_id}", timeout=TIMEOUT).json()
        job_asset = httpx.get(service.url + state["files"]["asset"], timeout=TIMEOUT).content
        direct = httpx.post(f"{service.url}/generate", json=sent[job_id], timeout=120)
        assert direct.status_code == 200 and direct.content == job_asset


def test_killing_the_job_stores_replica_loses_no_job(service: Service) -> None:
    def kill_store(admin: ServeAdmin, job_id: str) -> float:
        killed = admin.replica_pid("SharedState")
        os.kill(killed, signal.SIGKILL)
        start = time.monotonic()
        assert_not_lost_meanwhile(service.url, job_id)
        wait_for(lambda: replaced(admin, "SharedState", killed), 120, "a new job store replica", poll_s=0.2)
        return time.monotonic() - start

    run_through(service, kill_store, "kill -9 job store replica (sqlite)")


def test_killing_every_process_of_the_service_then_starting_it_again_resumes_every_job(service: Service) -> None:
    def kill_everything(*_: object) -> float:
        service.kill()
        start = time.monotonic()
        service.start()  # the same config: the same SQLite job store
        return time.monotonic() - start

    run_through(service, kill_everything, "SIGKILL whole service, start again")


@pytest.fixture
def on_redis(service: Service, tmp_path: Path) -> Iterator[RedisServer]:
    """The running service with its job store moved to a fresh Redis (a user_config change)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = service.admin()
    store = {"job_store": {"backend": "redis", "url": server.url}}

    def ready() -> bool:
        return httpx.get(f"{service.url}/health", timeout=10).status_code == 200

    try:
        with redeployed(admin, lambda config: with_user_config(config, "SharedState", **store), ready, 120):
            yield server
    finally:
        server.stop()


def test_stopping_redis_mid_run_loses_no_job_and_refuses_new_ones_meanwhile(service: Service, on_redis: RedisServer) -> None:
    def stop_redis(_: ServeAdmin, job_id: str) -> float:
        on_redis.stop()
        start = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # each waits a few seconds for the store, then answers
            reading = pool.submit(assert_not_lost_meanwhile, service.url, job_id)
            refused = httpx.post(f"{service.url}/jobs", json=bodies()[2], timeout=TIMEOUT)
            reading.result()
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text  # 202 means written
        assert "unreachable" in refused.json()["error"]
        on_redis.start()
        return time.monotonic() - start

    run_through(service, stop_redis, "stop Redis, start again")
