"""Every shell command in README.md runs as written, in a fresh copy of the checkout.

The copy gets its own ``.venv`` from the README's first command (``bash scripts/serve.sh``, with
the tiny config so that it runs on the CPU: a fresh install from the registries). Then every
other command of the README's ``bash`` blocks runs there, in order, in one shell (so ``source``
and ``export`` carry over), against that service on port 8093, and must exit 0. Lines whose
comment is marked ``(starts the service)`` or ``(runs the test suite)`` are not run in sequence:
the first starts the service here, the second is this very suite.

Commands named elsewhere, in the prose or in ``sh`` blocks, are checked too: each ``python``
command runs here with its placeholders filled in, and every other one must name the test that
runs it (or say why nothing here can), so that a new command cannot go unchecked.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, wait_until_ready

pytestmark = pytest.mark.serve
README = ROOT / "README.md"
NOT_IN_SEQUENCE = ("(starts the service)", "(runs the test suite)")
URL = "http://127.0.0.1:8093"
SETUP_AND_START_S = 1200
#: What a command named outside the ``bash`` blocks starts with.
PROGRAMS = ("python ", "pip ", "bash ", "gen3d ", "serve ", "ray ", "hf ", "npm ", "podman ", "docker ", "curl ")
#: Example values for the placeholders of prose commands (IN and OUT are made per run).
PLACEHOLDERS = {"N": "2", "CONFIG": "configs/serve_tiny.yaml"}
#: Commands named outside the bash blocks that do not run here as written: the file that runs each
#: instead and the text that file must hold ("the sequence": a bash block of this README runs it),
#: or None and why nothing here can run it.
SEQUENCE = "the sequence"
RUN_ELSEWHERE: dict[str, tuple[str | None, str]] = {
    "bash scripts/serve.sh configs/serve_tiny.yaml": (SEQUENCE, "bash scripts/serve.sh"),  # run with this config
    # The same launcher as the line above; the TRELLIS graph's own test serves this config.
    "bash scripts/serve.sh configs/serve_quality_tiny.yaml": ("tests/test_trellis_graph.py", '"serve_quality_tiny.yaml"'),
    "gen3d generate": (SEQUENCE, "gen3d generate"),
    "gen3d health": (SEQUENCE, "gen3d health"),
    "serve status": (SEQUENCE, "serve status"),
    "gen3d serve": ("tests/service/test_cli.py", "cli.cmd_serve("),
    "gen3d serve configs/serve_tiny.yaml": ("tests/test_wheel.py", '"gen3d", "serve", "configs/serve_tiny.yaml"'),
    "gen3d serve serve_config.yaml --host 0.0.0.0": ("tests/service/test_cli.py", '"--host", "0.0.0.0"'),
    "serve run": ("tests/conftest.py", '"ray.serve.scripts", "run"'),
    "serve deploy": ("tests/serve_admin.py", "/api/serve/applications/"),  # what `serve deploy` calls
    "npm ci": ("scripts/setup.sh", "npm ci --ignore-scripts"),
    # An option named in the text: the manifest's generator command, which tests/test_deploy.py runs, has it.
    "python -m scripts.serve_config --redis-url ...": ("deploy/rayservice.yaml", "EveryNode --redis-url redis://"),
    "python -m build --outdir dist": ("tests/test_wheel.py", '"-m", "build", "--no-isolation", "--outdir"'),
    "pip install dist/gen3d-0.1.0-py3-none-any.whl": ("tests/test_wheel.py", '"-m", "pip", "install"'),
    "podman build --format docker -t gen3d:0.1.0 .": ("tests/test_image.py", '"podman", "build"'),
    # Its DIR holds a GPU run's traces; the test runs its main() on recorded ones.
    "python -m scripts.gpu_timeline DIR/LABEL --alone DIR/alone": ("tests/scripts/test_gpu_timeline.py", "gpu_timeline.main(["),
    "serve run serve_config.yaml": (None, "needs a CUDA GPU; the tiny graph runs through the same builder"),
    "ray up": (None, "needs machines over SSH; tests/test_deploy.py runs Ray's own checks on the config"),
    "hf auth login": (None, "needs a Hugging Face account"),
    "podman run": (None, "needs a GPU, and containers cannot start here: tests/test_image.py runs the entry point"),
    "docker run": (None, "needs a GPU and Docker; the image's entry point is tested as for podman run"),
    "podman tag": (None, "needs a registry"),
    "podman push": (None, "needs a registry"),
}
#: Commands named outside the bash blocks that run here as written (placeholders filled in).
RUN_HERE = ("python ", "bash scripts/lock.sh")


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


def commands_outside_the_sequence(text: str) -> list[str]:
    """Commands in the prose (inline code) and in ``sh`` blocks (continuation lines joined)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found = [span for span in re.findall(r"`([^`\n]+)`", prose) if span.startswith(PROGRAMS)]
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            found += [part.strip() for part in command.split("&&") if part.strip()]
    return list(dict.fromkeys(found))


def elsewhere(command: str) -> tuple[str | None, str] | None:
    """The ``RUN_ELSEWHERE`` entry of ``command``: its exact text, else its first two words."""
    return RUN_ELSEWHERE.get(command) or RUN_ELSEWHERE.get(" ".join(command.split()[:2]))


def test_every_command_outside_the_sequence_is_run_here_or_by_a_named_test() -> None:
    unchecked = []
    for command in commands_outside_the_sequence(README.read_text()):
        entry = elsewhere(command)
        if entry is None and command.startswith(RUN_HERE):
            continue  # the next test runs it
        if entry is None:
            unchecked.append(command)
        elif entry[0] == SEQUENCE:
            assert any(line.startswith(entry[1]) for line in readme_commands(README.read_text())), command
        elif entry[0] is not None:
            assert entry[1] in (ROOT / entry[0]).read_text(), f"{command}: {entry[0]} no longer runs it"
    assert unchecked == [], "add each to RUN_ELSEWHERE with the test that runs it, or run it in a bash block"


def test_every_python_command_of_the_prose_runs(tmp_path: Path) -> None:
    """``RUN_HERE`` commands named in the prose, placeholders filled in, in a fresh checkout copy."""
    copy = checkout_copy(tmp_path / "gen3d")
    (copy / ".venv").symlink_to(ROOT / ".venv")  # scripts/lock.sh runs the checkout's tools
    trimesh = pytest.importorskip("trimesh")
    trimesh.creation.box().export(tmp_path / "in.glb")
    values = {**PLACEHOLDERS, "IN": str(tmp_path / "in.glb"), "OUT": str(tmp_path / "out.ply")}
    commands = [c for c in commands_outside_the_sequence(README.read_text()) if c.startswith(RUN_HERE) and not elsewhere(c)]
    assert commands, "the prose names python commands"
    for command in commands:
        words = [values.get(word, word) for word in command.split()]
        argv = [sys.executable, *words[1:]] if words[0] == "python" else words
        result = subprocess.run(argv, cwd=copy, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert (tmp_path / "out.ply").stat().st_size > 0


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
