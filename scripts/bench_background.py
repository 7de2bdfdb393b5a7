"""Time the background stage per rembg session and runtime at real size (issue 15), in one run.

For ``u2net`` (320^2 network input) and ``isnet-general-use`` (1024^2), each timed as the whole
stage (``BackgroundRemoval.process``: mask, then TripoSR recentring) on a 512^2 RGB image, the
median of ``--repeats`` calls after ``--warmup``:

- ``ort-cpu-all`` / ``ort-cpu-2``: rembg's own session through onnxruntime on the CPU, all cores
  or 2 threads;
- ``torch-cuda-*``: the same ONNX graph through ``gen3d.models.segmentation.onnx_torch`` on CUDA in fp32, bf16 or
  fp16, eager or as a CUDA graph, NCHW or channels-last; ``stage-cuda`` is the stage exactly as
  ``BackgroundRemoval.from_config`` builds it for ``device: cuda``.

IS-Net runs real weights when ``--isnet`` names the file (``python -m scripts.background_data
DIR`` writes it), else full-size random weights; u2net always runs full-size random weights (its
real file is not reachable here). With real weights each CUDA variant's masks are scored against
fp32's on the fixture scenes (IoU at alpha 128; the precision check of docs/background.md).

Usage (GPU box): python -m scripts.bench_background --out OUT [--isnet FILE] [--repeats 30]
CPU check: python -m scripts.bench_background --out OUT --repeats 1 --warmup 1 --cpu-repeats 2 --torch-on-cpu
"""

import argparse
import datetime
import json
import os
import statistics
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from gen3d.config import BackgroundConfig
from gen3d.devices import TORCH_DTYPES
from gen3d.models.segmentation.mask_predictors import SESSION_SPECS, TorchPredictor
from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.stages.background import (
    CUDA_DTYPE,
    BackgroundRemoval,
    model_file,
    session_class,
)
from scripts.background_data import iou, scenes
from scripts.bench_flux import synchronised_timer

SESSIONS = ("u2net", "isnet-general-use")
IMAGE_SIDE = 512


@dataclass(frozen=True)
class Variant:
    """One runtime setting of the stage.

    Attributes:
        label: row name.
        device: ``cpu`` (rembg + onnxruntime) or ``cuda`` (torch).
        threads: onnxruntime intra-op threads (None: all cores).
        precision: torch network dtype.
        cuda_graphs: replay the network as a CUDA graph.
        channels_last: NHWC layout for the network.
        from_config: build the stage with ``from_config`` (the production path) instead.
    """

    label: str
    device: str
    threads: int | None = None
    precision: str = "fp32"
    cuda_graphs: bool = False
    channels_last: bool = False
    from_config: bool = False


CPU_VARIANTS = (Variant("ort-cpu-all", "cpu"), Variant("ort-cpu-2", "cpu", threads=2))
CUDA_VARIANTS = (
    Variant("torch-cuda-fp32", "cuda"),
    Variant("torch-cuda-fp32-graph-cl", "cuda", cuda_graphs=True, channels_last=True),
    Variant("torch-cuda-bf16-graph-cl", "cuda", precision="bf16", cuda_graphs=True, channels_last=True),
    Variant("torch-cuda-fp16-eager-cl", "cuda", precision="fp16", channels_last=True),
    Variant("torch-cuda-fp16-graph", "cuda", precision="fp16", cuda_graphs=True),
    Variant("torch-cuda-fp16-graph-cl", "cuda", precision="fp16", cuda_graphs=True, channels_last=True),
    Variant(
        "stage-cuda", "cuda", cuda_graphs=True, channels_last=True, from_config=True,
        precision=next(name for name, dtype in TORCH_DTYPES.items() if dtype == CUDA_DTYPE),
    ),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_background.json and .md")
    parser.add_argument("--isnet", type=Path, help="real IS-Net ONNX (else IS-Net runs random weights)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per CUDA variant")
    parser.add_argument("--cpu-repeats", type=int, default=5, help="timed calls per CPU variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sessions", nargs="+", default=list(SESSIONS), choices=SESSIONS)
    parser.add_argument(
        "--torch-on-cpu", action="store_true",
        help="check run without CUDA: the fp32 eager torch variant runs on the CPU, the others are skipped",
    )
    return parser.parse_args()


def bench_image(side: int = IMAGE_SIDE) -> np.ndarray:
    """(side, side, 3) uint8: the horse fixture over the studio backdrop, upscaled to FLUX's output size."""
    _, rgb, _ = next(iter(scenes(("horse.png",))))
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    image = torch.nn.functional.interpolate(image, size=(side, side), mode="bilinear", antialias=True)
    return image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def link_real_isnet(home: Path, isnet: Path) -> None:
    """Put the real IS-Net where rembg's ``isnet-general-use`` session looks (rembg does not re-hash it)."""
    target = home / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(isnet.resolve())


def build_stage(session: str, mode: str, variant: Variant, torch_device: torch.device) -> BackgroundRemoval:
    """The stage for one session and variant (see ``Variant``); torch variants run on ``torch_device``."""
    device = variant.device if variant.device == "cpu" else str(torch_device)
    cfg = BackgroundConfig(mode=mode, session=session, device=device, threads=variant.threads)
    if variant.device == "cpu" or variant.from_config:
        return BackgroundRemoval.from_config(cfg)
    spec = SESSION_SPECS[session]
    net = OnnxTorchModule(onnx.load(str(model_file(cfg, session_class(session)))), (1, 3, spec.size, spec.size))
    predictor = TorchPredictor(
        net, spec, torch_device, TORCH_DTYPES[variant.precision],
        channels_last=variant.channels_last, cuda_graphs=variant.cuda_graphs,
    )
    return BackgroundRemoval(cfg, predictor)


def variants(torch_on_cpu: bool) -> tuple[Variant, ...]:
    """CPU variants, then the CUDA ones (on CUDA, or the fp32 eager one on the CPU for a check run:
    torch's CPU fp16 convolutions are a slow reference path)."""
    if torch_on_cpu:
        return CPU_VARIANTS + CUDA_VARIANTS[:1]
    return CPU_VARIANTS + (CUDA_VARIANTS if torch.cuda.is_available() else ())


def precision_scores(stage: BackgroundRemoval, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Mask IoU (alpha >= 128) of ``stage`` against the fp32 masks, per fixture scene."""
    return {label: iou(stage.predictor(rgb) >= 128, reference[label]) for label, rgb, _ in scenes()}


def measure(stage: BackgroundRemoval, image: np.ndarray, warmup: int, repeats: int) -> dict[str, Any]:
    """Median and min seconds of ``stage.process`` and of its mask alone; peak CUDA memory."""
    for _ in range(warmup):
        stage.process(image)
    cuda = stage.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(stage.device)
    stage_times: list[float] = []
    mask_times: list[float] = []
    for _ in range(repeats):
        synchronised_timer(stage.process, stage.device, stage_times)(image)
        synchronised_timer(stage.predictor, stage.device, mask_times)(image)
    row = {
        "median_s": statistics.median(stage_times), "min_s": min(stage_times),
        "mask_median_s": statistics.median(mask_times), "times_s": stage_times,
    }
    if cuda:  # gpu_memory_gib caps reserved memory, so both matter
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(stage.device) / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(stage.device) / 2**30
    return row


def run_session(session: str, args: argparse.Namespace, image: np.ndarray) -> list[dict[str, Any]]:
    """Every variant of one session; a failing variant is recorded, not fatal."""
    mode = "real" if session == "isnet-general-use" and args.isnet else "random"
    torch_device = torch.device("cpu" if args.torch_on_cpu else "cuda")
    rows, reference = [], None
    for variant in variants(args.torch_on_cpu):
        row: dict[str, Any] = {"session": session, "weights": mode, **asdict(variant)}
        if variant.device == "cuda":
            row["device"] = str(torch_device)
        print(f"{session} {variant.label} on {row['device']} ...", flush=True)
        try:
            stage = build_stage(session, mode, variant, torch_device)
            repeats = args.cpu_repeats if stage.device.type == "cpu" else args.repeats
            row.update(measure(stage, image, args.warmup, repeats))
            if mode == "real" and variant.device == "cuda":
                if variant.label == CUDA_VARIANTS[0].label:  # fp32, eager: the reference
                    reference = {label: stage.predictor(rgb) >= 128 for label, rgb, _ in scenes()}
                scores = precision_scores(stage, reference) if reference else {}
                row["iou_vs_fp32_min"], row["iou_vs_fp32"] = min(scores.values(), default=None), scores
            del stage
        except Exception as error:  # noqa: BLE001 - one broken variant must not lose the others
            row["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": ort.__version__,
        "image": f"{IMAGE_SIDE}x{IMAGE_SIDE} RGB",
        "repeats": args.repeats, "cpu_repeats": args.cpu_repeats, "warmup": args.warmup,
        "isnet": str(args.isnet) if args.isnet else "random weights",
    }


def write_results(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write bench_background.json and .md; returns the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_background.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Background stage, {meta['image']}: {meta['gpu']}, {meta['cpu_cores']} cores, torch {meta['torch']}, "
        f"onnxruntime {meta['onnxruntime']}, {meta['date']}. Median of {meta['repeats']} (CUDA) / "
        f"{meta['cpu_repeats']} (CPU) after {meta['warmup']} warm-up calls.",
        "",
        "| session | weights | variant | stage median ms | stage min ms | mask median ms | peak alloc / reserved GiB "
        "| min IoU vs fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['session']} | {r['weights']} | {r['label']} | error: {r['error'][:90]} | | | | |")
            continue
        peak = f"{r['peak_allocated_gib']:.2f} / {r['peak_reserved_gib']:.2f}" if "peak_allocated_gib" in r else "-"
        score = f"{r['iou_vs_fp32_min']:.4f}" if r.get("iou_vs_fp32_min") is not None else "-"
        lines.append(
            f"| {r['session']} | {r['weights']} | {r['label']} | {1000 * r['median_s']:.1f} | {1000 * r['min_s']:.1f} | "
            f"{1000 * r['mask_median_s']:.1f} | {peak} | {score} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "bench_background.md").write_text(table)
    return table


def main() -> None:
    args = parse_args()
    # A private rembg home: random nets are written there and the real IS-Net is linked in.
    home = Path(tempfile.mkdtemp(prefix="rembg_home_"))
    os.environ["REMBG_HOME"] = str(home)
    os.environ.pop("U2NET_HOME", None)
    if args.isnet:
        link_real_isnet(home, args.isnet)
    image = bench_image()
    rows = [row for session in args.sessions for row in run_session(session, args, image)]
    print(write_results(args.out, environment(args), rows))


if __name__ == "__main__":
    main()
