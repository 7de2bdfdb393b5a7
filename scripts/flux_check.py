"""Full-size FLUX on one GPU: batched images against alone, seconds per batch size, attention backends.

    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python -m scripts.flux_check --out OUT \\
        --set compile_cache_dir=/tmp/gen3d_card_limit/compile --backends _native_cudnn

Builds the preset's text_to_image stage as a replica does (``random``: full-size random weights,
fp8, compiled, CUDA graphs, its memory cap; ``max_batch_size`` the largest of ``--batch-sizes``),
then:

1. **Independence**: each target request alone, then inside batches of every size with other
   companions and positions. Per batch size: the worst mean and max absolute pixel difference
   (of 255) and the lowest PSNR against the image alone.
2. **Speed**: median seconds of a call at each batch size (the capacity model's ``--batched``).
3. **Memory**: the stage's peak allocation after warming every batch size (its cap holds it).
4. **Kernels** (``--backends``): the stage again with each diffusers attention backend, batch
   size 1; its images against the default backend's (PSNR, mean and max pixel error) and its
   seconds. Backends that fail to build or run are reported, not fatal.

Writes ``flux_check.json`` and ``flux_check.md`` to ``--out``; ``--budget-s`` skips what would
not finish in time (each phase says so).
"""

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen3d.config import load_preset, parse_overrides
from gen3d.stages.text_to_image import TextToImage
from gen3d.stages.text_to_image_batch import ImageRequest

logger = logging.getLogger("flux_check")

TARGETS = (("a red wooden chair", 1), ("a ceramic teapot with a blue glaze", 2), ("a brass desk lamp", 3))
COMPANIONS = (("a sports car", 11), ("a dragon statue on a rock", 12), ("a coffee mug", 13), ("a leather boot", 14))
#: Seconds a backend's stage needs at least (load, compile of its attention, capture, images).
BACKEND_S = 90.0


def difference(image: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """Mean and max absolute difference (of 255) and PSNR in dB (None when identical)."""
    delta = image.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(delta**2))
    return {
        "mean": float(np.abs(delta).mean()),
        "max": float(np.abs(delta).max()),
        "psnr_db": None if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
    }


def worst(differences: list[dict[str, float | None]]) -> dict[str, float | None]:
    """The largest mean and max, and the lowest PSNR (None only if every pair was identical)."""
    psnrs = [d["psnr_db"] for d in differences if d["psnr_db"] is not None]
    return {
        "mean": max(d["mean"] for d in differences),
        "max": max(d["max"] for d in differences),
        "psnr_db": min(psnrs) if psnrs else None,
        "pairs": len(differences),
    }


def requests(size: int, steps: int) -> dict[str, Any]:
    """The target and companion requests at ``size`` px and ``steps``."""
    return {
        "targets": [ImageRequest(prompt, seed, steps, size, size) for prompt, seed in TARGETS],
        "companions": [ImageRequest(prompt, seed, steps, size, size) for prompt, seed in COMPANIONS],
    }


def independence(stage: TextToImage, sizes: list[int], made: dict[str, Any]) -> dict[str, Any]:
    """Each target alone and inside a batch of every size, at every position the targets cycle through."""
    alone = {target: stage.generate(target.prompt, target.seed, *target.settings) for target in made["targets"]}
    by_size = {}
    for size in sizes:
        if size == 1:
            continue
        pairs = []
        for index, target in enumerate(made["targets"]):
            batch = list(made["companions"][: size - 1])
            position = index % size
            batch.insert(position, target)
            image = stage.generate_batch(batch)[position].image
            pairs.append(difference(image, alone[target].image))
        by_size[size] = worst(pairs)
    return {"by_batch_size": by_size, "alone": {t.prompt: a.image for t, a in alone.items()}}


def speed(stage: TextToImage, sizes: list[int], made: dict[str, Any], repeats: int) -> dict[int, dict[str, float]]:
    """Median seconds of one call per batch size, and per image."""
    rows = {}
    for size in sizes:
        batch = (list(made["targets"]) + list(made["companions"]))[:size]
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            stage.generate_batch(batch)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        rows[size] = {"call_s": median, "per_image_s": median / size}
    return rows


def release() -> None:
    """Free a dropped stage's memory and compiled code before the next one is built (one process, one cap)."""
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)


def measure_backend(base: dict[str, Any], backend: str, reference: dict[str, np.ndarray], made: dict[str, Any]) -> dict[str, Any]:
    """The default images and seconds with ``backend`` as the attention backend (batch size 1)."""
    cfg = load_preset(base["preset"], {"text_to_image": {**base["overrides"], "attention_backend": backend, "max_batch_size": 1}})
    stage = TextToImage.from_config(cfg.text_to_image)
    stage.warmup()
    images = {t.prompt: stage.generate(t.prompt, t.seed, *t.settings).image for t in made["targets"]}
    result = worst([difference(images[prompt], reference[prompt]) for prompt in reference])
    result["call_s"] = speed(stage, [1], made, repeats=5)[1]["call_s"]
    return result


def backend_check(base: dict[str, Any], backend: str, reference: dict[str, np.ndarray], made: dict[str, Any]) -> dict[str, Any]:
    """``measure_backend``, or the error of a backend this build or card lacks; its stage freed either way."""
    try:
        result = measure_backend(base, backend, reference, made)
    except Exception as err:  # noqa: BLE001  # reported in the table; the next backend still runs
        result = {"error": f"{type(err).__name__}: {err}"[:400]}
    release()
    return result


def markdown(report: dict[str, Any]) -> str:
    """The three tables of the report."""
    lines = ["| batch size | call s | s per image | worst mean / max pixel error | lowest PSNR |", "|---:|---:|---:|---|---:|"]
    for size, row in report.get("speed", {}).items():
        diff = report.get("independence", {}).get(size) or report.get("independence", {}).get(str(size))
        cells = "identical (size 1)" if diff is None else f"{diff['mean']:.3f} / {diff['max']:.0f}"
        psnr = "–" if diff is None or diff["psnr_db"] is None else f"{diff['psnr_db']:.1f} dB"
        lines.append(f"| {size} | {row['call_s']:.3f} | {row['per_image_s']:.3f} | {cells} | {psnr} |")
    lines.append(f"\nPeak allocated after warming every batch size: {report.get('peak_gib', float('nan')):.2f} GiB")
    if report.get("backends"):
        lines += ["", "| attention backend | call s (batch 1) | mean / max pixel error vs default | PSNR |", "|---|---:|---|---:|"]
        for name, row in report["backends"].items():
            if "error" in row:
                lines.append(f"| {name} | – | failed: {row['error'][:120]} | – |")
            else:
                psnr = "identical" if row["psnr_db"] is None else f"{row['psnr_db']:.1f} dB"
                lines.append(f"| {name} | {row['call_s']:.3f} | {row['mean']:.3f} / {row['max']:.0f} | {psnr} |")
    for note in report.get("skipped", []):
        lines.append(f"\nSkipped: {note}")
    return "\n".join(lines)


def stage_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options of every full-size FLUX check: --out, --preset and --set overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="random")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="text_to_image override")
    return parser


def write_report(out: Path, name: str, report: dict[str, Any], text: str) -> None:
    """``out/name.json`` and ``out/name.md``, and the table on standard output."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{name}.md").write_text(text + "\n")
    print(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--backends", nargs="*", default=[], help="diffusers attention backends to compare")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
    parser.add_argument("--budget-s", type=float, default=600.0, help="skip phases that would not finish in time")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    deadline = time.monotonic() + args.budget_s
    sizes = sorted(set(args.batch_sizes))
    overrides = {**parse_overrides(args.set), "max_batch_size": max(sizes)}
    cfg = load_preset(args.preset, {"text_to_image": overrides}).text_to_image
    device = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else cfg.device
    report: dict[str, Any] = {"preset": args.preset, "overrides": overrides, "device": device, "skipped": []}
    stage = TextToImage.from_config(cfg)
    stage.warmup()
    report["startup_s"] = stage.startup_s
    report["peak_gib"] = stage.peak_memory_bytes() / 2**30
    made = requests(cfg.width, cfg.steps)
    checked = independence(stage, sizes, made)
    report["independence"] = checked["by_batch_size"]
    report["speed"] = speed(stage, sizes, made, args.repeats)
    del stage
    release()
    report["backends"] = {}
    for backend in args.backends:
        if time.monotonic() + BACKEND_S > deadline:
            report["skipped"].append(f"attention backend {backend}: under {BACKEND_S:.0f} s of budget left")
            continue
        base = {"preset": args.preset, "overrides": {k: v for k, v in overrides.items() if k != "max_batch_size"}}
        report["backends"][backend] = backend_check(base, backend, checked["alone"], made)
    write_report(args.out, "flux_check", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
