"""Every shell command in README.md runs as written, in a fresh copy of the checkout.

The copy gets its own ``.venv`` from the README's first command (``bash scripts/serve.sh``, with
the tiny config so that it runs on the CPU: a fresh install from the registries). Then every
other command of the README's ``bash`` blocks runs there, in order, in one shell (so ``source``
and ``export`` carry over), against that service on port 8093, and must exit 0. Lines whose
comment is marked ``(starts the service)`` or ``(runs the test suite)`` are not run in sequence:
the first starts the service here, the second is this very suite.
"""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, wait_until_ready

pytestmark = pytest.mark.serve
README = ROOT / "README.md"
NOT_IN_SEQUENCE = ("(starts the service)", "(runs the test suite)")
URL = "http://127.0.0.1:8093"
SETUP_AND_START_S = 1200


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ``bash`` blocks, one per logical line, comments kept."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def checkout_copy(target: Path) -> Path:
    """The files git tracks (and untracked ones it does not ignore), as a fresh clone would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_commands_are_found_and_marked() -> None:
    commands = readme_commands(README.read_text())
    starts = [c for c in commands if "(starts the service)" in c]
    assert starts[0].startswith("bash scripts/serve.sh") and any("(runs the test suite)" in c for c in commands)
    assert any(c.startswith("gen3d generate") for c in commands) and any(c.startswith("curl") for c in commands)


def test_every_readme_command_runs_in_a_fresh_checkout(tmp_path: Path) -> None:
    try:
        httpx.get(f"{URL}/health", timeout=1)
        pytest.fail("port 8093 is taken: the README's service must be the one answering there")
    except httpx.HTTPError:
        pass
    copy = checkout_copy(tmp_path / "gen3d")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        service = subprocess.Popen(
            ["bash", "scripts/serve.sh", "configs/serve_tiny.yaml"],
            cwd=copy, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_ready(URL, service, log, SETUP_AND_START_S)
        shutil.copy(ROOT / "tests" / "fixtures" / "chair.png", copy / "photo.png")
        script = "set -eo pipefail\n" + "\n".join(
            command for command in readme_commands(README.read_text())
            if not any(mark in command for mark in NOT_IN_SEQUENCE)
        )
        result = subprocess.run(
            ["bash", "-c", script], cwd=copy, capture_output=True, text=True, timeout=900,
            env={**os.environ, "PATH": f"{copy / '.venv' / 'bin'}:{os.environ['PATH']}"},
        )
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        for name in ("mug.glb", "mug_vertex.glb", "chair.zip", "chair.ply", "cube.glb", "photo.ply"):
            assert (copy / name).stat().st_size > 0, name
    finally:
        service.send_signal(signal.SIGINT)  # the launcher drains, then stops Serve
        try:
            service.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
