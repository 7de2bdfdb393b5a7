"""Pre-flight: a config this machine cannot run stops before Ray starts, with one clear message."""

import json
import os
from pathlib import Path

import pytest
import yaml

from gen3d.config import load_preset
from gen3d.service import preflight
from gen3d.service.preflight import (
    PreflightError,
    check_devices,
    check_serve_config,
    check_weights,
)
from tests.conftest import ROOT

TINY = ROOT / "configs" / "serve_tiny.yaml"
PRODUCTION = ROOT / "serve_config.yaml"
NO_GPU = (0, "this machine has 0 usable CUDA device(s) (torch, a CPU-only build; no nvidia-smi)")


def offline(url: str) -> bool:
    return False


def online(url: str) -> bool:
    return True


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and rembg home, so nothing real is cached."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return tmp_path


#: The commits the fast preset pins, per repo.
PINNED = {source["repo"]: source["revision"] for source in load_preset("fast").weights().values() if "repo" in source}


def cache_file(root: Path, repo: str, filename: str, data: bytes = b"x") -> Path:
    """Put ``filename`` into a Hugging Face cache layout under ``root``: the snapshot of the commit
    the fast preset pins for ``repo``, which refs/main names too."""
    commit = PINNED.get(repo, "0" * 40)
    repo_dir = root / "hf" / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    path = repo_dir / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("path", [TINY, Path("configs/serve_tiny.yaml"), Path("./configs/serve_tiny.yaml")])
def test_the_tiny_config_passes_on_a_cpu_machine_by_any_path(
    path: Path, monkeypatch: pytest.MonkeyPatch, empty_caches: Path
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(preflight, "local_cuda_devices", lambda: NO_GPU)
    notes = check_serve_config(path, online=offline)
    assert notes == ["preset tiny uses random weights: outputs are demos, not real assets"]


@pytest.mark.parametrize("path", [PRODUCTION, Path("serve_config.yaml"), Path("./serve_config.yaml")])
def test_the_production_config_fails_on_a_cpu_machine_naming_the_tiny_one(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(preflight, "local_cuda_devices", lambda: NO_GPU)
    with pytest.raises(PreflightError) as failure:
        check_serve_config(path, online=online)
    message = str(failure.value)
    assert len(message.splitlines()) == 1
    assert "configs/serve_tiny.yaml" in message
    assert "text_to_image" in message and "image_to_3d" in message and "CUDA" in message


def test_the_decision_comes_from_the_devices_not_the_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "local_cuda_devices", lambda: NO_GPU)
    # The tiny config under the production file's name runs; the production one under the tiny name does not.
    cpu = tmp_path / "serve_config.yaml"
    cpu.write_text(TINY.read_text())
    assert check_serve_config(cpu, online=offline)
    gpu = tmp_path / "serve_tiny.yaml"
    gpu.write_text(PRODUCTION.read_text())
    with pytest.raises(PreflightError):
        check_serve_config(gpu, online=online)


def test_an_override_that_moves_a_stage_to_cuda_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "local_cuda_devices", lambda: NO_GPU)
    config = yaml.safe_load(TINY.read_text())
    config["applications"][0]["args"]["overrides"] = {"image_to_3d": {"device": "cuda:1"}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PreflightError, match=r"image_to_3d \(device cuda:1\)"):
        check_serve_config(path, online=offline)


def test_a_second_gpu_index_needs_two_devices() -> None:
    preset = load_preset("tiny", {"image_to_3d": {"device": "cuda:1"}})
    check_devices(preset, 2, "two GPUs", "mine")
    with pytest.raises(PreflightError, match="one GPU"):
        check_devices(preset, 1, "one GPU", "mine")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (ROOT / "configs" / "tiny.yaml", "not a serve config"),
        (ROOT / "no_such.yaml", "no such serve config"),
    ],
)
def test_a_wrong_file_is_named(path: Path, expected: str) -> None:
    with pytest.raises(PreflightError, match=expected):
        check_serve_config(path, online=offline)


def test_offline_without_weights_lists_each_missing_item_and_its_command(empty_caches: Path) -> None:
    preset = load_preset("fast", {"text_to_image": {"device": "cpu"}, "image_to_3d": {"device": "cpu"}})
    with pytest.raises(PreflightError) as failure:
        check_weights(preset, online=offline)
    message = str(failure.value)
    flux, triposr = preset.text_to_image, preset.image_to_3d
    assert f'hf download {flux.repo} --revision {flux.revision} --include "model_index.json" --include "*/*"' in message
    assert "hf auth login" in message  # FLUX.1-schnell is gated on the Hub
    assert f"hf download {triposr.repo} --revision {triposr.revision} config.yaml model.ckpt" in message
    session = preset.background.session
    assert f"rembg.new_session('{session}')" in message and str(empty_caches / "rembg") in message
    assert "gen3d serve configs/serve_tiny.yaml" in message


def test_online_without_weights_says_what_the_first_start_downloads(empty_caches: Path) -> None:
    preset = load_preset("fast")
    notes = check_weights(preset, online=online)
    assert [note.split(":")[0] for note in notes] == ["text_to_image", "image_to_3d", "background"]
    assert "~33.7 GB" in notes[0] and "~1.7 GB" in notes[1]


def test_cached_weights_pass_and_a_missing_shard_is_named(empty_caches: Path) -> None:
    for name in ("config.yaml", "model.ckpt"):
        cache_file(empty_caches, "stabilityai/TripoSR", name)
    flux = "black-forest-labs/FLUX.1-schnell"
    index = {"_class_name": "FluxPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "FluxTransformer2DModel"], "safety_checker": [None, None]}
    cache_file(empty_caches, flux, "model_index.json", json.dumps(index).encode())
    cache_file(empty_caches, flux, "scheduler/scheduler_config.json")
    shards = {"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                             "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    cache_file(empty_caches, flux, "transformer/diffusion_pytorch_model.safetensors.index.json", json.dumps(shards).encode())
    cache_file(empty_caches, flux, "transformer/diffusion_pytorch_model-00001-of-00002.safetensors")
    preset = load_preset("fast")
    session = preset.background.session
    rembg_model = empty_caches / "rembg" / "models" / session / f"{session}.onnx"
    rembg_model.parent.mkdir(parents=True)
    rembg_model.write_bytes(b"onnx")
    with pytest.raises(PreflightError) as failure:
        check_weights(preset, online=offline)
    lines = [line for line in str(failure.value).splitlines() if line.startswith("  ")]
    assert len(lines) == 1 and "transformer/diffusion_pytorch_model-00002-of-00002.safetensors" in lines[0]
    cache_file(empty_caches, flux, "transformer/diffusion_pytorch_model-00002-of-00002.safetensors")
    assert check_weights(preset, online=offline) == []


def test_the_ray_cluster_count_is_what_build_app_checks() -> None:
    # graph.build_app passes ray.cluster_resources()["GPU"]: a GPU-less cluster fails the same way.
    with pytest.raises(PreflightError, match="the Ray cluster has 0 GPU"):
        check_devices(load_preset("fast"), 0, "the Ray cluster has 0 GPU(s)", "preset fast")
    check_devices(load_preset("tiny"), 0, "the Ray cluster has 0 GPU(s)", "preset tiny")


def test_this_machine_is_described_without_guessing() -> None:
    import torch

    count, found = preflight.local_cuda_devices()
    assert count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert f"torch {torch.__version__}" in found and os.linesep not in found
