"""gen3d.parts.compile_cache: the versions key, its folder, and artifacts that turn a new folder's compiles into hits."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from gen3d.parts.compile_cache import (
    ARTIFACTS_NAME,
    KEY_NAME,
    CompileCache,
    CompileKey,
    driver_version,
    open_compile_cache,
)

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


@pytest.fixture
def restore_cache_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """open_compile_cache sets these process-wide; monkeypatch puts the old values back afterwards."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "previous"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "previous"))


def test_key_names_every_version_in_a_safe_folder_name() -> None:
    key = CompileKey.current(CPU)
    assert key.torch == torch.__version__ and key.device == "cpu" and key.driver == "none"
    gpu = replace(key, device="NVIDIA H200", capability="9.0", driver="580.82.07", cuda="13.0")
    name = gpu.dir_name()
    for value in asdict(gpu).values():
        assert value.replace(" ", "-") in name
    assert "/" not in name and " " not in name
    assert CompileKey.current(CPU).dir_name() == key.dir_name()


def test_key_round_trips_through_its_file_and_lists_differences(tmp_path: Path) -> None:
    key = CompileKey.current(CPU)
    key.write(tmp_path / KEY_NAME)
    assert CompileKey.from_file(tmp_path / KEY_NAME) == key
    older = replace(key, torch="2.10.0", driver="570.1")
    assert key.differences(older) == {"torch": (key.torch, "2.10.0"), "driver": ("none", "570.1")}
    (tmp_path / "bad.json").write_text(json.dumps({"torch": "2.11"}))
    with pytest.raises(ValueError, match="expected a JSON object with keys"):
        CompileKey.from_file(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023", "535.129.03"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build", "580.82.07"),
    ],
)
def test_driver_version_reads_the_kernel_module_line(tmp_path: Path, line: str, version: str) -> None:
    path = tmp_path / "version"
    path.write_text(line + "\nGCC version: gcc 12\n")
    assert driver_version(path) == version
    assert driver_version(tmp_path / "absent") == "none"


@pytest.mark.usefixtures("restore_cache_env")
def test_open_points_torch_at_the_key_folder_and_says_why_it_compiles(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    older = replace(CompileKey.current(CPU), torch="2.10.0")
    stale = root / older.dir_name()
    stale.mkdir(parents=True)
    older.write(stale / KEY_NAME)
    (stale / ARTIFACTS_NAME).write_bytes(b"from an older torch")
    with caplog.at_level(logging.INFO, logger="gen3d.parts.compile_cache"):
        cache = open_compile_cache(root, CPU)
    assert cache.directory == root.resolve() / CompileKey.current(CPU).dir_name()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.inductor_dir)
    assert os.environ["TRITON_CACHE_DIR"] == str(cache.triton_dir)
    assert CompileKey.from_file(cache.directory / KEY_NAME) == CompileKey.current(CPU)
    assert f"torch 2.10.0 -> {torch.__version__}" in caplog.text and "compiling" in caplog.text


COMPILE_ONCE = """
import json, sys
import torch
from torch._dynamo.utils import counters
from gen3d.parts.compile_cache import CompileCache, open_compile_cache, save_artifacts
cache = open_compile_cache(sys.argv[1], torch.device("cpu"))
torch.compile(lambda x: (x.sin() * 2).sum(-1), fullgraph=True)(torch.randn(4, 8))
if sys.argv[2] == "save":
    save_artifacts(cache)
print(json.dumps({group: dict(counters[group]) for group in ("aot_autograd", "inductor")}))
"""


def compile_in_new_process(root: Path, action: str) -> dict[str, dict[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ONCE, str(root), action], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_artifacts_make_a_new_machines_compile_a_cache_hit(tmp_path: Path) -> None:
    built = compile_in_new_process(tmp_path / "built", "save")
    assert built["inductor"].get("fxgraph_cache_miss") == 1
    # A "new machine": an empty root holding only the key folder's artifacts and key.
    source = CompileCache.for_device(tmp_path / "built", CPU)
    target = CompileCache.for_device(tmp_path / "copied", CPU)
    target.directory.mkdir(parents=True)
    shutil.copy2(source.artifacts, target.artifacts)
    loaded = compile_in_new_process(tmp_path / "copied", "load")
    assert loaded["inductor"].get("fxgraph_cache_hit") == 1 and "fxgraph_cache_miss" not in loaded["inductor"]
    assert loaded["aot_autograd"].get("autograd_cache_hit") == 1


@pytest.mark.usefixtures("restore_cache_env")
def test_unreadable_artifacts_stop_the_start_naming_the_file(tmp_path: Path) -> None:
    cache = CompileCache.for_device(tmp_path, CPU)
    cache.directory.mkdir(parents=True)
    cache.artifacts.write_bytes(b"not a torch cache archive")
    with pytest.raises(RuntimeError, match=f"cannot load {re.escape(str(cache.artifacts))}.*gen3d.service.precompile --force"):
        open_compile_cache(tmp_path, CPU)
