"""One start of the text_to_image stage, as a replica does it, measured phase by phase (no Ray).

``scripts/bench_startup.py`` runs this once per row in a fresh process; it also runs alone:

    python -m scripts.startup_probe --label warm --set fp8_weights=plain --set compile_text_encoder=false \
        --set compile_cache_dir=/var/cache/gen3d --out OUT

It builds the preset's stage (``TextToImage.from_config``), warms it up, times requests and writes
OUT/rows/<label>.json with:

- ``startup_s``: the stage's own phases (``compile_cache``, ``weights``, ``fp8``, ``warmup``)
  and ``process_s``, from the start of the interpreter (imports included) to warm;
- ``captures``: per CUDA-graphed call, the warm-up runs before capture (where compiled code
  compiles) and the recording;
- ``compile``: Dynamo's per-frame compilation metrics summed (Dynamo, AOTAutograd, Inductor,
  Triton and runtime autotuning seconds; FX-graph and AOTAutograd cache hits and misses),
  torch's compile-time table, its counters, recompile reasons and every cache-bypass message;
- ``request_s``: median seconds per allowed step count at the default size, after warm-up;
- the image of seed 0 (OUT/images/<label>.npy) so that rows can be compared pixel for pixel.
"""

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen3d.config import load_preset, parse_overrides
from gen3d.parts.compile_cache import CompileCache, CompileKey, save_artifacts
from gen3d.parts.cuda_graphs import CudaGraphed
from gen3d.stages.text_to_image import GRAPHED_CALLS, TextToImage
from scripts.bench_flux import PROMPT, synchronised_timer

#: Loggers that say why a compile could not use (or fill) the on-disk caches.
CACHE_LOGGERS = ("torch._functorch._aot_autograd.autograd_cache", "torch._inductor.codecache")


class BypassRecorder(logging.Handler):
    """Keeps the distinct cache-bypass messages the compile caches log at INFO."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "ypass" in message:
            self.messages[message[:500]] = self.messages.get(message[:500], 0) + 1


def record_cache_bypasses() -> BypassRecorder:
    recorder = BypassRecorder()
    for name in CACHE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(recorder)
    return recorder


def frame_metrics() -> list[dict[str, Any]]:
    """Dynamo's metrics per compiled frame (and per runtime event), seconds everywhere, Nones dropped."""
    from torch._dynamo.utils import get_compilation_metrics

    frames = []
    for metrics in get_compilation_metrics():
        row: dict[str, Any] = {}
        for name, value in dataclasses.asdict(metrics).items():
            if "start_time" in name or "end_time" in name:  # clock readings, not durations
                continue
            if isinstance(value, bool) or value is None:
                if value:
                    row[name] = value
            elif name.endswith("_us") and isinstance(value, (int, float)):
                row[name.removesuffix("_us") + "_s"] = round(value / 1e6, 3)
            elif name.endswith("_s") and isinstance(value, (int, float)):
                row[name] = round(value, 3)
            elif name in ("co_name", "co_filename", "fail_reason", "recompile_reason") or name.endswith("_count"):
                row[name] = value if name != "co_filename" else Path(str(value)).name
        frames.append(row)
    return frames


def compile_summary(frames: list[dict[str, Any]], bypasses: BypassRecorder) -> dict[str, Any]:
    """Totals over frames, torch's compile-time table and counters, recompiles and bypass messages."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    totals: dict[str, float] = {}
    for frame in frames:
        for name, value in frame.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = round(totals.get(name, 0.0) + value, 3)
    # Dynamo's own share of a frame: everything but the backend (AOTAutograd + Inductor + Triton).
    frame_s, backend_s = totals.get("entire_frame_compile_time_s", 0.0), totals.get("backend_compile_time_s", 0.0)
    totals["dynamo_only_s"] = round(frame_s - backend_s, 3)
    return {
        "totals": totals,
        "frames": [frame for frame in frames if not frame.get("is_runtime")],
        "compile_times_s": {name: round(sum(values), 3) for name, values in compilation_time_metrics.items()},
        "counters": {
            group: dict(values)
            for group, values in counters.items()
            if group in ("aot_autograd", "inductor", "stats", "frames", "recompiles")
        },
        "graph_breaks": sum(counters["graph_break"].values()),
        "recompile_reasons": sorted({frame["recompile_reason"] for frame in frames if frame.get("recompile_reason")}),
        "cache_bypasses": bypasses.messages,
    }


def capture_times(stage: TextToImage) -> dict[str, dict[str, float]]:
    """The warm-up-runs and recording seconds of every CUDA-graphed call (empty without graphs)."""
    captures = {}
    for component, method in GRAPHED_CALLS:
        graphed = getattr(getattr(stage.pipe, component), method)
        if isinstance(graphed, CudaGraphed):
            captures[f"{component}.{method}"] = {name: round(value, 3) for name, value in graphed.capture_s.items()}
    return captures


def request_times(stage: TextToImage, repeats: int) -> dict[str, float]:
    """Median seconds of a request per allowed step count, at the preset's default size."""
    cfg = stage.cfg
    medians = {}
    for steps in cfg.allowed_steps:
        seconds: list[float] = []
        timed = synchronised_timer(stage.generate, stage.device, seconds)
        for seed in range(repeats):
            timed(PROMPT, seed, steps, cfg.width, cfg.height)
        medians[f"{cfg.width}x{cfg.height}_{steps}steps"] = round(statistics.median(seconds), 4)
    return medians


def save_image(stage: TextToImage, path: Path) -> str:
    """Write the default request's image for seed 0 as .npy; return its SHA-256."""
    cfg = stage.cfg
    image = stage.generate(PROMPT, 0, cfg.steps, cfg.width, cfg.height).image
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, image)
    return hashlib.sha256(image.tobytes()).hexdigest()


def environment(device: torch.device) -> dict[str, Any]:
    from torchao.utils import _is_mslk_available

    return {
        "key": dataclasses.asdict(CompileKey.current(device)),
        # With mslk installed torchao picks its kernels instead of torch._scaled_mm (plain keeps _scaled_mm).
        "torchao_mslk_kernels": bool(_is_mslk_available()),
        "torch_logs": os.environ.get("TORCH_LOGS"),
        "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="random", help="preset name or YAML path (its text_to_image section)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="text_to_image override, repeatable (e.g. fp8_weights=plain)")
    parser.add_argument("--label", default="run", help="names the row and its files")
    parser.add_argument("--repeats", type=int, default=10, help="timed requests per step count")
    parser.add_argument("--save-artifacts", action="store_true",
                        help="after the requests, write the compile artifacts as gen3d.service.precompile does")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="results folder (default $OUT or ./out)")
    args = parser.parse_args()
    try:
        args.overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    return args


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stage, warm it, time requests; return the row."""
    bypasses = record_cache_bypasses()
    cfg = load_preset(args.preset, {"text_to_image": args.overrides}).text_to_image
    stage = TextToImage.from_config(cfg)
    stage.warmup()
    process_s = time.time() - process_start_time()
    compile_report = compile_summary(frame_metrics(), bypasses)
    row: dict[str, Any] = {
        "label": args.label,
        "preset": args.preset,
        "overrides": args.overrides,
        "startup_s": {name: round(value, 2) for name, value in stage.startup_s.items()} | {"process_s": round(process_s, 1)},
        "captures": capture_times(stage),
        "compile": compile_report,
        "request_s": request_times(stage, args.repeats),
        "image_sha256": save_image(stage, Path(args.out) / "images" / f"{args.label}.npy"),
        "peak_memory_gib": round(stage.peak_memory_bytes() / 2**30, 2),
        "weights": f"random weights unless mode real ({cfg.mode})",
        "environment": environment(stage.device),
    }
    if args.save_artifacts and cfg.compile_cache_dir is not None:
        cache = CompileCache.for_device(cfg.compile_cache_dir, stage.device)
        start = time.perf_counter()
        counts = save_artifacts(cache)
        seconds = round(time.perf_counter() - start, 2)
        row["artifacts"] = {"seconds": seconds, "bytes": cache.artifacts.stat().st_size, "entries": counts}
    return row


def process_start_time() -> float:
    """Epoch seconds at which this process started (Linux ``/proc``; else the time of this call)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(float(line.split()[1]) for line in lines if line.startswith("btime"))
    except (OSError, IndexError, StopIteration, ValueError):
        return time.time()
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    row = probe(args)
    path = Path(args.out) / "rows" / f"{args.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2, default=str))
    print(json.dumps({key: row[key] for key in ("label", "startup_s", "request_s")}))


if __name__ == "__main__":
    main()
