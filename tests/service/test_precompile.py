"""gen3d.service.precompile: which config it compiles, and when it has nothing to do (no compiling here).

The compile-and-save path itself is gen3d.parts.compile_cache's (tests/parts/test_compile_cache.py).
"""

import argparse
from pathlib import Path

import pytest
import torch

from gen3d.config import TextToImageConfig
from gen3d.devices import CAPPED_ALLOCATOR_ENV
from gen3d.parts.compile_cache import CompileCache
from gen3d.service.precompile import graph_args, precompile, stage_config

ROOT = Path(__file__).resolve().parents[2]


def args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(**{"serve_config": None, "preset": None, "set": [], "force": False, **values})


def test_config_is_the_serve_configs_preset_with_overrides() -> None:
    graph, _ = graph_args(args(serve_config=str(ROOT / "configs" / "serve_random.yaml")))
    cfg = stage_config(graph, ["kernel_tuning=false"])
    assert cfg.mode == "random" and cfg.precision == "fp8" and cfg.kernel_tuning is False


@pytest.mark.parametrize("config", ["serve_config.yaml", "configs/serve_random.yaml", "configs/serve_gpus_2.yaml"])
def test_the_replicas_env_comes_along(config: str) -> None:
    """Without the FLUX replica's allocator setting, precompile failed its memory cap on the GPU box."""
    graph, env = graph_args(args(serve_config=str(ROOT / config)))
    assert env == CAPPED_ALLOCATOR_ENV and graph["preset"] in {"fast", "random"}
    assert graph_args(args(preset="fast"))[1] == CAPPED_ALLOCATOR_ENV


def test_compiling_without_a_cache_folder_is_refused_and_no_compile_is_nothing_to_do() -> None:
    with pytest.raises(ValueError, match="compile is on but compile_cache_dir is unset"):
        precompile(TextToImageConfig(mode="tiny", device="cpu", compile=True), force=False)
    assert precompile(TextToImageConfig(mode="tiny", device="cpu"), force=False) is None


def test_existing_artifacts_for_this_key_mean_nothing_to_do(tmp_path: Path) -> None:
    cfg = TextToImageConfig(mode="tiny", device="cpu", compile=True, compile_cache_dir=str(tmp_path))
    cache = CompileCache.for_device(tmp_path, torch.device("cpu"))
    cache.directory.mkdir(parents=True)
    cache.artifacts.write_bytes(b"saved by an earlier run")
    assert precompile(cfg, force=False) == cache
    assert cache.artifacts.read_bytes() == b"saved by an earlier run"
    assert not cache.inductor_dir.exists()  # no stage was started
