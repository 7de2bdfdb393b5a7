"""gen3d.service.mps and the launcher's MPS hook, with a fake ``nvidia-cuda-mps-control`` on PATH
that records every call (arguments, stdin, the pipe folder, the visible devices)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from gen3d.service import launcher, mps
from gen3d.service.mps import MpsUnavailable, start_mps

FAKE_CONTROL = """#!{python}
import json, os, sys
stdin = "" if "-d" in sys.argv else sys.stdin.read()
record = {{"argv": sys.argv[1:], "stdin": stdin.strip(), "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
          "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY"), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}}
with open({calls!r}, "a") as out:
    out.write(json.dumps(record) + "\\n")
if stdin.strip() == "get_server_list":
    print("4242")
sys.exit(int(os.environ.get("FAKE_MPS_EXIT", "0")))
"""
FAKE_SMI = """#!/bin/sh
printf '0, GPU-aaaa\\n1, GPU-bbbb\\n'
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH with the fake control binary and nvidia-smi; returns its calls log."""
    folder = tmp_path / "bin"
    folder.mkdir()
    calls = tmp_path / "calls.jsonl"
    executable(folder / "nvidia-cuda-mps-control", FAKE_CONTROL.format(python=sys.executable, calls=str(calls)))
    executable(folder / "nvidia-smi", FAKE_SMI)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return calls


def recorded(calls: Path) -> list[dict]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def joins(environ, binary) -> None:
    """A probe whose client joined the daemon (no problem to report)."""


def test_on_starts_a_private_daemon_and_stop_quits_it(fake_bin: Path) -> None:
    daemon = start_mps("on", True, dict(os.environ), probe=joins)
    assert daemon is not None
    pipe = daemon.client_env["CUDA_MPS_PIPE_DIRECTORY"]
    assert Path(pipe).is_dir() and Path(pipe).parent.name.startswith("gen3d-mps-")
    assert Path(daemon.client_env["CUDA_MPS_LOG_DIRECTORY"]).parent == Path(pipe).parent
    (started,) = recorded(fake_bin)
    assert started["argv"] == ["-d"] and started["pipe"] == pipe and started["visible"] is None
    daemon.stop(dict(os.environ))
    assert [call["stdin"] for call in recorded(fake_bin)] == ["", "quit"]
    assert recorded(fake_bin)[-1]["pipe"] == pipe and not Path(pipe).exists()


def test_auto_serves_without_mps_when_no_cuda_client_can_join(fake_bin: Path) -> None:
    # The real probe on this CPU machine: torch finds no CUDA device, so the daemon goes again.
    assert start_mps("auto", True, dict(os.environ)) is None
    calls = recorded(fake_bin)
    assert [call["argv"] for call in calls] == [["-d"], []] and calls[1]["stdin"] == "quit"
    assert not Path(calls[0]["pipe"]).parent.exists()


def test_on_fails_with_the_reason(fake_bin: Path) -> None:
    with pytest.raises(MpsUnavailable, match="mps: on, but a CUDA client refused"):
        start_mps("on", True, dict(os.environ), probe=lambda environ, binary: "a CUDA client refused")
    with pytest.raises(MpsUnavailable, match="-d failed"):
        start_mps("on", True, {**os.environ, "FAKE_MPS_EXIT": "1"}, probe=joins)


def test_off_no_gpu_stage_or_no_binary_start_nothing(fake_bin: Path, tmp_path: Path) -> None:
    assert start_mps("off", True, dict(os.environ), probe=joins) is None
    assert start_mps("auto", False, dict(os.environ), probe=joins) is None
    assert recorded(fake_bin) == []
    bare = {**os.environ, "PATH": str(tmp_path / "nothing")}
    assert start_mps("auto", True, bare, probe=joins) is None
    with pytest.raises(MpsUnavailable, match="nvidia-cuda-mps-control is not on PATH"):
        start_mps("on", True, bare, probe=joins)


def test_visible_devices_become_uuids_for_the_daemon_and_the_replicas(fake_bin: Path) -> None:
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": "1,0"}
    daemon = start_mps("on", True, environ, probe=joins)
    assert daemon.client_env["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb,GPU-aaaa"
    assert recorded(fake_bin)[0]["visible"] == "GPU-bbbb,GPU-aaaa"
    daemon.stop(environ)
    with pytest.raises(MpsUnavailable, match=r"names GPU\(s\) \['7'\]"):
        start_mps("on", True, {**os.environ, "CUDA_VISIBLE_DEVICES": "7"}, probe=joins)


def test_mode_comes_from_the_builder_args() -> None:
    assert mps.mps_mode({}) == "off" and mps.mps_mode({"mps": "auto"}) == "auto"
    with pytest.raises(ValueError, match="args.mps: expected one of"):
        mps.mps_mode({"mps": "yes"})


def serve_config(tmp_path: Path, mode: str) -> Path:
    """The tiny serve config with ``mps`` and FLUX on CUDA (only read here, never served)."""
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "configs" / "serve_tiny.yaml").read_text())
    args = config["applications"][0]["args"]
    args.update(mps=mode, overrides={"text_to_image": {"device": "cuda"}})
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_launcher_hands_the_daemon_to_serve_run_and_quits_it(
    fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mps, "probe_client", joins)
    seen = tmp_path / "serve_env.json"
    fake_serve = [sys.executable, "-c", f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"]
    assert launcher.run(serve_config(tmp_path, "on"), fake_serve) == 0
    env = json.loads(seen.read_text())
    started, quit_ = recorded(fake_bin)
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == started["pipe"] == quit_["pipe"] and quit_["stdin"] == "quit"


def test_launcher_stops_before_serve_when_mps_on_cannot_run(
    fake_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    never = [sys.executable, "-c", "raise SystemExit('serve run must not start')"]
    assert launcher.run(serve_config(tmp_path, "on"), never) == 2  # the real probe: no CUDA here
    assert "gen3d: mps: on, but a CUDA client failed" in capsys.readouterr().err
