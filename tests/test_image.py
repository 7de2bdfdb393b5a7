"""The container image: the Dockerfile lints clean, builds with podman, and its own entry point
serves the tiny config.

hadolint runs always. The build and run are opt-in, as they take minutes and need podman and
mmdebstrap (scripts/setup.sh installs them): ``GEN3D_IMAGE_TEST=1 bash scripts/test.sh
tests/test_image.py -s``. No registry serves base images here, so mmdebstrap builds a Debian base
with Python 3.11 and the build gets it as ``BASE_IMAGE``, with ``TORCH=cpu`` (the CUDA build from
the network would not fit the time). Containers cannot start on these machines (rlimits), so the
test runs the image's own files instead: it mounts the image (``podman image mount``) and chroots
into it, in a private mount namespace, as the image's user, with the image's environment, entry
point and working directory. Each phase's seconds are printed (``-s``). A base image from an
earlier run is reused (``podman rmi localhost/gen3d-test-base:bookworm`` forces a new one), and
so are podman's cached layers: a rerun rebuilds only what changed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gen3d import __version__
from tests.conftest import ROOT, free_port, wait_until_ready

IMAGE = f"localhost/gen3d:{__version__}"
BASE = "localhost/gen3d-test-base:bookworm"
opt_in = pytest.mark.skipif(os.environ.get("GEN3D_IMAGE_TEST") != "1", reason="set GEN3D_IMAGE_TEST=1 to build the image")


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, ROOT / "Dockerfile"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Built:
    """The built image's name, its config and health check (``podman image inspect``), and each
    phase's seconds."""

    name: str
    config: dict
    healthcheck: dict
    seconds: dict[str, float]


def timed(seconds: dict[str, float], phase: str, command: list[str]) -> str:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds[phase] = time.perf_counter() - start
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def pip_settings() -> list[str]:
    """Build arguments and mounts that give pip in the build what pip has here: local wheel
    folders (the CPU build of torch) and the CA bundle of this network's TLS proxy."""
    arguments = []
    folders = [folder for folder in os.environ.get("PIP_FIND_LINKS", "").split() if Path(folder).is_dir()]
    if folders:
        arguments += ["--build-arg", f"PIP_FIND_LINKS={' '.join(folders)}"]
        arguments += [f"--volume={folder}:{folder}:ro" for folder in folders]
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        arguments += ["--build-arg", "PIP_CERT=/run/host-ca.crt", f"--volume={cert}:/run/host-ca.crt:ro"]
    return arguments


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    if not (shutil.which("podman") and shutil.which("mmdebstrap")):
        pytest.fail("podman and mmdebstrap are needed: GEN3D_IMAGE_TEST=1 bash scripts/setup.sh --tests installs them")
    seconds: dict[str, float] = {}
    if subprocess.run(["podman", "image", "exists", BASE], check=False).returncode != 0:
        base = tmp_path_factory.mktemp("base") / "bookworm.tar"
        timed(seconds, "mmdebstrap base", ["mmdebstrap", "--quiet", "--variant=minbase",
                                           "--include=python3,python3-venv,ca-certificates", "bookworm", str(base)])
        timed(seconds, "podman import base", ["podman", "import", "--quiet", str(base), BASE])
    build = ["podman", "build", "--format", "docker", "--isolation", "chroot", "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg", "TORCH=cpu",
             *pip_settings(), "--tag", IMAGE, str(ROOT)]
    timed(seconds, "podman build", build)
    (inspected,) = json.loads(timed(seconds, "inspect", ["podman", "image", "inspect", IMAGE]))
    yield Built(IMAGE, inspected["Config"], inspected.get("Healthcheck") or {}, seconds)
    print("\nimage test, seconds per phase:", {name: round(value, 1) for name, value in seconds.items()})


def chroot_command(built: Built, root: Path, home: Path, arguments: list[str]) -> list[str]:
    """The image's entry point with ``arguments`` (instead of its CMD), run in its files as its user.

    A private mount namespace gives the read-only image its kernel file systems, a fresh /tmp and
    a writable home; the mounts vanish with the process.
    """
    user, _, group = built.config["User"].partition(":")
    env = [*built.config["Env"], "RAY_USAGE_STATS_ENABLED=0"]
    mounts = "; ".join([
        f"mount --rbind /proc {root}/proc", f"mount --rbind /sys {root}/sys", f"mount --rbind /dev {root}/dev",
        f"mount -t tmpfs tmpfs {root}/tmp", f"mount --bind {home} {root}{built.config['WorkingDir']}",
    ])
    chroot = ["chroot", f"--userspec={user}:{group or user}", str(root), "/usr/bin/env", "-i", *env,
              "sh", "-c", f'cd "{built.config["WorkingDir"]}" && exec "$@"', "entry", *built.config["Entrypoint"], *arguments]
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child=SIGINT",
            "sh", "-ec", f'{mounts}; exec "$@"', "mounts", *chroot]


@opt_in
def test_the_images_entry_point_serves_the_tiny_config(built: Built, tmp_path: Path) -> None:
    assert built.config["Entrypoint"] == ["gen3d", "serve"] and built.config["User"] != "0"
    assert "8093/tcp" in built.config["ExposedPorts"] and built.healthcheck["Test"][1:3] == ["gen3d", "health"]
    root = Path(timed(built.seconds, "podman image mount", ["podman", "image", "mount", built.name]).strip())
    home = tmp_path / "home"
    home.mkdir()
    uid = int(built.config["User"].partition(":")[0])
    os.chown(home, uid, uid)
    port = free_port()
    log = tmp_path / "serve.log"
    command = chroot_command(built, root, home, ["configs/serve_tiny.yaml", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(url, process, log)
        built.seconds["entry point -> /health 200"] = time.perf_counter() - start
        assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        asset = httpx.post(f"{url}/generate", json={"prompt": "a brass lamp"}, timeout=120)
        assert asset.status_code == 200 and asset.content[:4] == b"glTF"
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200 and "<script type=\"importmap\">" in page.text
        version = httpx.get(f"{url}/version", timeout=30).json()
        assert version["version"] == __version__ and version["mode"] == "tiny"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["podman", "image", "umount", built.name], capture_output=True, check=False)
