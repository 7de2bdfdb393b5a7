"""scripts/write_random_checkpoints.py at tiny size: the real-mode loaders read its output offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts import write_random_checkpoints as writer

ROOT = Path(__file__).resolve().parents[2]

#: Runs where HF_HUB_CACHE and HF_HUB_OFFLINE are set before huggingface_hub is imported.
LOAD_BOTH = """
import json
import numpy as np
import gen3d.stages.text_to_image
from gen3d.config import TextToImageConfig
from gen3d.stages.text_to_image import TextToImage
from gen3d.models.triposr import TripoSR, TripoSRConfig
# The files hold the tiny build's weights; the tiny demo's prompt amplification comes after it.
gen3d.stages.text_to_image.amplify_prompt_ = lambda pipe: None
common = dict(device="cpu", precision="fp32", text_encoder_precision="fp32", width=32, height=32,
              allowed_sizes=[32], steps=3, allowed_steps=[3], max_sequence_length=16)
images = [TextToImage.from_config(TextToImageConfig(mode=mode, **common)).generate("a red cube", 3, 3, 32, 32).image
          for mode in ("real", "tiny")]
triposr = TripoSR.from_pretrained("stabilityai/TripoSR")
print(json.dumps({
    "same_image": bool(np.array_equal(*images)),
    "image_std": float(images[0].std()),
    "triposr_tiny": triposr.cfg == TripoSRConfig.tiny(),
    "triposr_parameters": sum(p.numel() for p in triposr.parameters()),
}))
"""


def test_real_loaders_read_the_written_tiny_repos_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny shards, so the sharded files and their index (full size: 3 and 2 shards) are what gets loaded.
    monkeypatch.setitem(writer.SHARD_SIZES, "transformer", "100KB")
    monkeypatch.setitem(writer.SHARD_SIZES, "text_encoder_2", "50KB")
    flux = writer.write_flux(tmp_path, "tiny", torch.device("cpu"), torch.float32, seed=0)
    triposr = writer.write_triposr(tmp_path, "tiny", torch.device("cpu"), seed=0)

    snapshot = Path(flux["path"])
    storage = snapshot.parent.parent
    assert storage.name == "models--black-forest-labs--FLUX.1-schnell"
    assert (storage / "refs" / "main").read_text() == snapshot.name
    model_index = json.loads((snapshot / "model_index.json").read_text())
    assert model_index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert len(list((snapshot / "transformer").glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    assert (snapshot / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert (snapshot / "text_encoder_2" / "model.safetensors.index.json").is_file()
    assert {path.name for path in Path(triposr["path"]).iterdir()} == {"config.yaml", "model.ckpt"}

    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", LOAD_BOTH], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # The written weights are mode tiny's for seed 0: real mode on them computes the same image.
    assert loaded["same_image"] and loaded["image_std"] > 1.0
    assert loaded["triposr_tiny"] and loaded["triposr_parameters"] > 0
