"""Write random weights in the official repos' file layout into a local Hugging Face cache folder.

    python -m scripts.write_random_checkpoints DIR                 # full size, built on the GPU
    python -m scripts.write_random_checkpoints DIR --size tiny --device cpu --dtype fp32
    HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1 python -m scripts.startup_probe --set mode=real ...

The ``real``-mode loaders then find the two repos as if downloaded, with no network:

- ``models--black-forest-labs--FLUX.1-schnell``: diffusers' layout (``model_index.json``,
  ``scheduler/``, ``text_encoder/`` CLIP-L, ``text_encoder_2/`` T5-XXL in 5 GB shards with its
  index, ``tokenizer/``, ``tokenizer_2/``, ``transformer/`` in 10 GB shards with its index,
  ``vae/``), all safetensors, written by the components' own ``save_pretrained``. The weights are
  those of ``mode: random`` with the same seed (``gen3d.models.flux.components.build_components``), so a
  real-mode start on them computes the random preset's images. The tokenizers are gen3d's local
  ones (byte-level CLIP BPE, printable-ASCII T5 Unigram) saved in transformers' file formats:
  small vocabularies, real special tokens and lengths.
- ``models--stabilityai--TripoSR``: ``config.yaml`` (reference schema) and ``model.ckpt``, a plain
  float32 state dict (``torch.save``; loads with ``weights_only=True``), with the planted demo
  sphere of the random mode so meshes come out.

Each repo gets ``refs/main`` and ``snapshots/<revision>/`` (a fixed fake commit hash; files are
stored in the snapshot, not as blob links). Full size is about 33 GB of FLUX in bf16 and 1.7 GB of
TripoSR: the models are built on ``--device`` and written one shard at a time, so host memory stays
near one shard (10 GB). Expect a few minutes on a GPU machine, mostly disk writes.
"""

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from gen3d.devices import TORCH_DTYPES
from gen3d.models.flux.components import Size, build_components
from gen3d.models.triposr import TripoSR, TripoSRConfig
from gen3d.models.triposr.loading import CONFIG_NAME, WEIGHTS_NAME
from gen3d.models.triposr.planted import plant_sphere_in_weights

FLUX_REPO = "black-forest-labs/FLUX.1-schnell"
TRIPOSR_REPO = "stabilityai/TripoSR"
#: Shard sizes of the public FLUX.1-schnell repo (3 transformer shards, 2 T5 shards at full size).
SHARD_SIZES = {"transformer": "10GB", "text_encoder_2": "5GB"}


def snapshot_dir(cache: Path, repo: str) -> Path:
    """Create ``models--<owner>--<name>/refs/main`` in ``cache`` and return its empty snapshot folder."""
    revision = hashlib.sha1(f"gen3d random weights of {repo}".encode()).hexdigest()
    storage = cache / f"models--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(revision)
    snapshot = storage / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def write_flux(cache: Path, size: Size, device: torch.device, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    """FLUX.1-schnell's diffusers folder; returns per-component seconds and bytes."""
    from diffusers import FluxPipeline

    start = time.perf_counter()
    components = build_components(size, device, dtype, seed=seed)
    report: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1)}
    snapshot = snapshot_dir(cache, FLUX_REPO)
    FluxPipeline(**components).save_config(snapshot)  # model_index.json: each component's library and class
    for name in sorted(components):
        component = components.pop(name)
        start = time.perf_counter()
        if isinstance(component, torch.nn.Module):  # safetensors is both libraries' default format
            component.save_pretrained(snapshot / name, max_shard_size=SHARD_SIZES.get(name, "10GB"))
        else:
            component.save_pretrained(snapshot / name)
        del component  # free the device copy before the next component is written
        report[name] = {"seconds": round(time.perf_counter() - start, 1), "bytes": folder_bytes(snapshot / name)}
    report["path"] = str(snapshot)
    return report


def write_triposr(cache: Path, size: Size, device: torch.device, seed: int) -> dict[str, Any]:
    """TripoSR's ``config.yaml`` and float32 ``model.ckpt`` (planted sphere); returns seconds and bytes."""
    start = time.perf_counter()
    cfg = TripoSRConfig.official() if size == "full" else TripoSRConfig.tiny()
    torch.manual_seed(seed)
    model = TripoSR.from_config(cfg, dtype=torch.float32, device=device)
    plant_sphere_in_weights(model)
    snapshot = snapshot_dir(cache, TRIPOSR_REPO)
    (snapshot / CONFIG_NAME).write_text(yaml.safe_dump(cfg.to_reference_dict(), sort_keys=False))
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    torch.save(state, snapshot / WEIGHTS_NAME)
    return {"seconds": round(time.perf_counter() - start, 1), "bytes": folder_bytes(snapshot), "path": str(snapshot)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="the folder to use as HF_HUB_CACHE")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the random weights are built (full size on a CPU takes long)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                        help="FLUX storage dtype (the public repo is bf16); TripoSR is always float32 like its release")
    parser.add_argument("--seed", type=int, default=0, help="the text_to_image seed whose random weights to write")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device)
    start = time.perf_counter()
    report = {
        "flux": write_flux(args.cache, args.size, device, TORCH_DTYPES[args.dtype], args.seed),
        "triposr": write_triposr(args.cache, args.size, device, args.seed),
        "size": args.size,
        "dtype": args.dtype,
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
