"""The wheel runs on its own: built with ``python -m build``, installed into a fresh venv, served
from an empty directory on a PATH without Node.js, with no checkout in sight.

The venv reaches this environment's dependencies through a ``.pth`` line instead of downloading
torch again: only the wheel under test is installed into it (``--no-deps``), so ``gen3d``,
``deployments`` and the data tree come from the wheel. Each phase's seconds are printed
(``pytest -s``) for the record; nothing asserts on them.
"""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deployments.web import REFRESH_COMMAND
from tests.conftest import ROOT, ServedGraph, free_port, wait_until_ready
from tests.serve_admin import log_texts, replica_log_texts

pytestmark = pytest.mark.serve
STOP_TIMEOUT_S = 120


@dataclass
class Installed:
    """A venv holding only the wheel, the environment to run it in, and each phase's seconds."""

    venv: Path
    package: Path
    env: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def run(command: list[str], **kwargs: object) -> None:
    subprocess.run(command, check=True, capture_output=True, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(ROOT)])
    (wheel,) = (root / "dist").glob("gen3d-*.whl")
    seconds["build (sdist, then the wheel from it)"] = time.perf_counter() - start
    start = time.perf_counter()
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_gen3d_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --force-reinstall: this environment's editable gen3d is visible through the .pth line, and
    # pip would otherwise take it for the same version already installed.
    run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)])
    seconds["venv + pip install <wheel>"] = time.perf_counter() - start
    env = {
        "HOME": os.environ["HOME"],
        "PATH": str(venv / "bin"),  # no Node.js, npm or checkout tools
        "XDG_CACHE_HOME": str(root / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    assert shutil.which("node", path=env["PATH"]) is None and shutil.which("npm", path=env["PATH"]) is None
    package = site / "gen3d"
    yield Installed(venv, package, env, seconds)
    print("\nwheel test, seconds per phase:", {name: round(value, 1) for name, value in seconds.items()})


def start(installed: Installed, command: list[str], log: Path, port: int) -> ServedGraph:
    """Start ``command`` from an empty directory and wait until ``/health`` answers 200."""
    workdir = log.parent / "empty"
    workdir.mkdir()
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=installed.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = ServedGraph(f"http://127.0.0.1:{port}", log, process)
    wait_until_ready(served.url, process, log)
    return served


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops the service; killed if it does not stop in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def generate_glb(url: str) -> bytes:
    response = httpx.post(f"{url}/generate", json={"prompt": "a wooden chair", "format": "glb"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.content


def test_the_wheel_serves_from_an_empty_directory_without_node(installed: Installed, tmp_path: Path) -> None:
    assert (installed.package / "_data" / "configs" / "serve_tiny.yaml").is_file()
    port = free_port()
    began = time.perf_counter()
    served = start(installed, ["gen3d", "serve", "configs/serve_tiny.yaml", "--port", str(port)], tmp_path / "serve.log", port)
    installed.seconds["gen3d serve -> /health 200"] = time.perf_counter() - began
    try:
        began = time.perf_counter()
        assert generate_glb(served.url)[:4] == b"glTF"
        installed.seconds["first POST /generate (GLB)"] = time.perf_counter() - began
        page = httpx.get(f"{served.url}/", timeout=30)
        assert page.status_code == 200 and "<script type=\"importmap\">" in page.text
        static = page.text.split('src="', 1)[1].split("/studio.js", 1)[0]
        spark = httpx.get(f"{served.url}{static}/vendor/@sparkjsdev/spark/dist/spark.module.min.js", timeout=30)
        assert spark.status_code == 200 and len(spark.content) > 1_000_000
        assert httpx.get(f"{served.url}/docs", timeout=30).status_code == 200
    finally:
        stop(served.process)


def test_without_the_studios_files_the_api_serves_and_says_so_once(installed: Installed, tmp_path: Path) -> None:
    """``serve run`` with the vendored files gone: every API route works, ``/`` names the fix, no traceback."""
    vendor = installed.package / "_data" / "web" / "vendor"
    vendor.rename(tmp_path / "vendor")
    try:
        port = free_port()
        config = tmp_path / "serve_tiny.yaml"
        config.write_text((installed.package / "_data" / "configs" / "serve_tiny.yaml").read_text().replace("8093", str(port)))
        command = ["python", "-m", "ray.serve.scripts", "run", str(config)]
        served = start(installed, command, tmp_path / "serve.log", port)
        try:
            assert generate_glb(served.url)[:4] == b"glTF"
            assert httpx.get(f"{served.url}/version", timeout=30).json()["mode"] == "tiny"
            for route in ("/", "/docs"):
                answer = httpx.get(f"{served.url}{route}", timeout=30)
                assert answer.status_code == 503 and REFRESH_COMMAND in answer.json()["error"], route
        finally:
            stop(served.process)
        lines = [line for text in replica_log_texts(served, "Ingress").values() for line in text.splitlines()]
        assert len([line for line in lines if "the studio's files are incomplete" in line]) == 1
        logs = log_texts(served.log, served.process.pid)
        assert not [path for path, text in logs.items() if "Traceback" in text]
    finally:
        (tmp_path / "vendor").rename(vendor)
