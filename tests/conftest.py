"""Shared fixtures: the tiny graph started through ``serve run`` once per test session."""

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gen3d.service.launcher import sigint_by_default
from tests.serve_admin import with_service, with_user_config

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STARTUP_TIMEOUT_S = 600


@dataclass(frozen=True)
class ServedGraph:
    """A running tiny service: its base URL, log file and process."""

    url: str
    log: Path
    process: subprocess.Popen


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``gpu`` marker implies a CUDA device: without one its tests are skipped, in one place."""
    import torch

    if torch.cuda.is_available():
        return
    needs_cuda = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(needs_cuda)


# Ray binds its workers to 10002-19999 and every other server (metrics exporter, agents, gRPC) to a
# kernel-chosen ephemeral port, any of which can take a port handed out by bind(0) in the seconds
# before Serve's proxy binds it. A port below the ephemeral range and above Ray's is never picked
# by anyone but us.
_FIRST_TEST_PORT = 20000


def _ephemeral_ports() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that no process will take by asking the kernel for any port."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(_FIRST_TEST_PORT, 65536) if port not in ephemeral]
    for port in random.sample(candidates, len(candidates)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port outside the ephemeral range")


def write_serve_config(
    path: Path, port: int, service: dict, store: dict | None = None, source: str = "serve_tiny.yaml"
) -> None:
    """A tiny serve config of the repo's (``source`` in configs/) on another port, with test-specific
    service settings and job store settings (default: SQLite in a ``jobs`` folder beside the config,
    not the user's cache)."""
    config = yaml.safe_load((ROOT / "configs" / source).read_text())
    config["http_options"]["port"] = port
    store = store or {"job_store": {"backend": "sqlite", "path": str(path.parent / "jobs")}}
    path.write_text(yaml.safe_dump(with_user_config(with_service(config, **service), "SharedState", **store)))


#: What Serve's controller logs once it gives up on a deployment whose replicas keep failing to
#: start; `serve run` of a config file keeps running after it, so waiting longer cannot help.
DEPLOY_FAILED = "Failed to update the deployments"


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited with {process.returncode}:\n{log.read_text()[-5000:]}")
        if DEPLOY_FAILED in (text := log.read_text(errors="replace")):
            raise RuntimeError(f"a deployment failed to start:\n{text[text.index(DEPLOY_FAILED) - 4000 :][:6000]}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            # The body, not only the status, says it is our ingress answering on this port.
            if httpx.get(f"{url}/health", timeout=2).json() == {"status": "ok"}:
                return
        time.sleep(1.0)
    raise RuntimeError(f"service not ready after {timeout_s} s:\n{log.read_text()[-5000:]}")


def python_stacks(pid: int) -> str:
    """Every thread's Python stack in process ``pid``, by py-spy (a dependency of Ray's), for the
    message of a hang; what went wrong instead when it cannot say."""
    py_spy = Path(sys.executable).with_name("py-spy")
    try:
        dump = subprocess.run([str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(no stacks: {err})"
    return dump.stdout or f"(no stacks: {dump.stderr.strip()})"


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops ``serve run``: Serve and its local Ray must shut down cleanly."""
    if process.poll() is not None:
        raise RuntimeError(f"serve run died during the tests with exit code {process.returncode}")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # Where serve run's own process stood after a minute is the one clue to a hang: keep it.
        stacks = python_stacks(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise RuntimeError(f"serve run did not shut down within 60 s of SIGINT; its stacks then:\n{stacks}") from None


@contextlib.contextmanager
def serving(workdir: Path, service: dict, source: str = "serve_tiny.yaml") -> Iterator[ServedGraph]:
    """``serve run`` on one of the repo's tiny serve configs in a subprocess, as the README starts it."""
    port = free_port()
    config_path = workdir / source
    write_serve_config(config_path, port, service, source=source)
    log = workdir / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ray.serve.scripts", "run", str(config_path)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=sigint_by_default,  # stop() sends SIGINT, however the tests were started
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield ServedGraph(url, log, process)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGraph]:
    """The tiny graph (configs/serve_tiny.yaml), once per test session."""
    with serving(tmp_path_factory.mktemp("serve"), {"request_timeout_s": 120, "max_in_flight": 32}) as graph:
        yield graph
