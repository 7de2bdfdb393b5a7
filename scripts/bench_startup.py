"""Start-up cost of the text_to_image stage, phase by phase (full size, random weights, no Ray).

What a replica of the production graph pays before it can answer, in order:

    build    build the random full-size models on the GPU and quantise them (``from_config``)
    encode   the first prompt encoding: compiles T5 (``compile_text_encoder``), captures its graph
    warm-up  ``TextToImage.warmup()``: compiles the transformer blocks (and the VAE decoder when
             configured) and captures the graphs of every allowed shape

then the steady-state time of one request (median of --repeats), so that a change made for
start-up can be seen to cost nothing per request.

Inductor keeps compiled kernels on disk (TORCHINDUCTOR_CACHE_DIR, by default
/tmp/torchinductor_$USER), so a restart on the same machine is cheaper than the first start. Run
twice with one fresh cache folder to get both:

    export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    python -m scripts.bench_startup --label cold --out OUT
    python -m scripts.bench_startup --label warm --out OUT

Run it as a module from the repo root (it shares its timer and prompt with bench_flux). Each run
appends its row to OUT/bench_startup.json.
"""

import argparse
import datetime
import json
import logging
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from gen3d.config import load_preset
from gen3d.devices import resolve_device
from gen3d.text_to_image import TextToImage
from scripts.bench_flux import PROMPT, synchronised_timer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="random", help="preset name or YAML path (its text_to_image section)")
    parser.add_argument("--label", default="run", help="names the row, e.g. cold or warm")
    parser.add_argument("--repeats", type=int, default=5, help="steady-state requests timed after start-up")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="results folder (default $OUT or ./out)")
    return parser.parse_args()


def first_encode(stage: TextToImage) -> None:
    with torch.inference_mode():
        stage.pipe.encode_prompt(
            prompt=PROMPT, prompt_2=None, device=stage.device, max_sequence_length=stage.cfg.max_sequence_length
        )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_preset(args.preset).text_to_image
    device = resolve_device(cfg.device)
    seconds: list[float] = []
    stage = synchronised_timer(TextToImage.from_config, device, seconds)(cfg)
    synchronised_timer(first_encode, device, seconds)(stage)
    synchronised_timer(stage.warmup, device, seconds)()
    build_s, encode_s, warmup_s = seconds
    request_s = [stage.generate(PROMPT, seed=i).seconds for i in range(args.repeats)]
    return {
        "label": args.label,
        "preset": args.preset,
        "build_s": round(build_s, 1),
        "first_encode_s": round(encode_s, 1),
        "warmup_s": round(warmup_s, 1),
        "total_s": round(build_s + encode_s + warmup_s, 1),
        "request_median_s": round(statistics.median(request_s), 4),
        "request": f"{cfg.width}x{cfg.height}, {cfg.steps} steps",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": f"measured with random weights ({cfg.mode} FLUX.1-schnell architecture)",
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    row = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_startup.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*rows, row], indent=2))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
