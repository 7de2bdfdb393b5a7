"""Benchmark our TRELLIS-image-large on a GPU: image -> textured GLB, phase by phase, eager vs fast.

Measured with random weights at full size (``configs/quality_random.yaml``): the networks run at
their real sizes on a planted sphere shell of 20,032 occupied voxels (``gen3d.models.trellis.planted``),
the order of a real object's sparse structure. The timed request is the service's default: a mesh
decimated to 20k faces, UV-unwrapped and baked from the full mesh's colours (1024^2), written as
GLB; and, separately, the splat product (TRELLIS's own gaussians). No HTTP or Ray hops.

Usage (on the GPU box, from the repo root):
    python -m scripts.bench_trellis --out OUT [--repeats 5] [--steps 25,12] [--variants eager,fast]
Writes OUT/bench_trellis.json and prints a markdown table; ``--profile [VARIANT]`` adds
torch.profiler's top operators of one ``generate`` (OUT/profile.txt), ``--attention`` the time of
each SDPA backend at the flows' attention shapes (OUT/attention.md). ``--preset quality_tiny --variants eager``
checks the script on a CPU in seconds (tiny random weights: no timing meaning).
"""

import argparse
import contextlib
import functools
import json
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gen3d.config import load_preset
from gen3d.formats import MeshOptions
from gen3d.models.trellis.sparse.tensor import SparseTensor
from gen3d.stages.export import Exporter
from gen3d.stages.image_to_3d import (
    FlowOptions,
    ShapeRequest,
    build_image_to_3d,
    warm_up_image,
)
from gen3d.stages.image_to_3d_trellis import TrellisImageTo3DStage
from scripts.bench_flux import timed_methods

GIB = 2**30
#: The pipeline methods timed as phases of ``generate``.
PHASES = ("condition", "sample_structure", "sample_latent", "decode_mesh", "decode_gaussians")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", default="25,12", help="comma-separated Euler steps of both flows")
    parser.add_argument("--variants", default="eager,fast", help="eager, fast (compiled blocks + CUDA graphs), fast-cudnn (fast, cuDNN attention first)")
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--preset", default="quality_random", help="quality_random (GPU) or quality_tiny (a CPU check)")
    parser.add_argument(
        "--profile", nargs="?", const="eager", default=None, metavar="VARIANT",
        help="also profile one generate of VARIANT (default eager): top ops in OUT/profile.txt",
    )  # fmt: skip
    parser.add_argument("--attention", action="store_true", help="also time each SDPA backend at the flows' shapes")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Variants: the preset's TRELLIS options each sets.
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {"compile": False, "cuda_graphs": False},
    "fast": {"compile": True, "cuda_graphs": True},
    "fast-cudnn": {"compile": True, "cuda_graphs": True, "attention": ("cudnn", "flash", "efficient", "math")},
}


def build_stage(preset: str, variant: str) -> TrellisImageTo3DStage:
    """The preset's TRELLIS stage with the variant's options (``fast``: compiled blocks, graphed first flow)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {variant!r}")
    cfg = load_preset(preset).image_to_3d
    trellis = cfg.trellis.model_copy(update=VARIANTS[variant])
    return build_image_to_3d(cfg.model_copy(update={"trellis": trellis}))


def first_latent(stage: TrellisImageTo3DStage, run: Callable[[], Any]) -> torch.Tensor:
    """The features (float, CPU) of the first structured latent ``sample_latent`` returns during ``run()``."""
    latents: list[SparseTensor] = []
    sample_latent = stage.model.sample_latent

    def keep(*args: Any, **kwargs: Any) -> SparseTensor:
        latents.append(sample_latent(*args, **kwargs))
        return latents[-1]

    stage.model.sample_latent = keep
    try:
        run()
    finally:
        del stage.model.sample_latent  # back to the class's method
    return latents[0].feats.float().cpu()


def one_request(stage: TrellisImageTo3DStage, exporter: Exporter, steps: int, mesh: MeshOptions) -> dict[str, float]:
    """Seconds of each step of one textured-GLB request (the GPU stage, the CPU remesh, the bake, the file)."""
    image = warm_up_image(stage.cond_size, backdrop=0)
    flow = FlowOptions(ss_steps=steps, slat_steps=steps)
    seconds: dict[str, float] = {}

    def lap(name: str, fn: Callable[[], Any]) -> Any:
        synchronize(stage.device)
        start = time.perf_counter()
        result = fn()
        synchronize(stage.device)
        seconds[name] = time.perf_counter() - start
        return result

    asset = lap("generate", lambda: stage.generate(image, ShapeRequest("mesh", 0, keep_color_field=True, flow=flow)))
    remeshed = lap("remesh_cpu", lambda: exporter.remesh(asset, mesh))
    textured = lap("bake", lambda: stage.bake(remeshed))
    glb = lap("export_glb", lambda: exporter.export(textured, "glb", "+y", mesh))
    seconds["total"] = sum(seconds.values())
    seconds["raw_faces"] = float(len(asset.mesh.faces))
    seconds["glb_faces"] = float(glb.faces or 0)
    seconds["glb_bytes"] = float(len(glb.data))
    return seconds


def splat_request(stage: TrellisImageTo3DStage, steps: int) -> tuple[float, int]:
    """Seconds and gaussian count of one splat request (generate with gaussians)."""
    image = warm_up_image(stage.cond_size, backdrop=0)
    flow = FlowOptions(ss_steps=steps, slat_steps=steps)
    synchronize(stage.device)
    start = time.perf_counter()
    asset = stage.generate(image, ShapeRequest("gaussians", 0, flow=flow))
    synchronize(stage.device)
    return time.perf_counter() - start, len(asset.gaussians)


def bench_variant(variant: str, steps_list: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    build_start = time.perf_counter()
    stage = build_stage(args.preset, variant)
    weights_gib = torch.cuda.memory_allocated() / GIB if cuda else 0.0
    exporter = Exporter.from_config(load_preset(args.preset).export)
    mesh = MeshOptions(faces=args.faces, texture="uv", texture_size=args.texture_size, resolution=256, normalize=True)
    first = time.perf_counter()
    one_request(stage, exporter, steps_list[0], mesh)  # compiles and captures in the fast variant
    first_request_s = time.perf_counter() - first
    rows = []
    for steps in steps_list:
        # Warm for this step count, keeping the request's latent for ``latent_difference``.
        latent = first_latent(stage, functools.partial(one_request, stage, exporter, steps, mesh))
        torch.save(latent, args.out / f"latent_{variant}_{steps}.pt")
        with timed_methods(stage.model, PHASES, stage.device) as phases:
            runs = [one_request(stage, exporter, steps, mesh) for _ in range(args.repeats)]
        splats = [splat_request(stage, steps) for _ in range(max(1, args.repeats // 2))]
        row = {
            "variant": variant,
            "steps": steps,
            "build_s": first - build_start,
            "first_request_s": first_request_s,
            "weights_gib": weights_gib,
            "peak_gib": torch.cuda.max_memory_allocated() / GIB if cuda else 0.0,
            "splat_s": statistics.median(s for s, _ in splats),
            "gaussians": splats[0][1],
        }
        row |= {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        row |= {f"phase_{name}": statistics.median(values) for name, values in phases.items() if values}
        rows.append(row)
        print(json.dumps(row), flush=True)
    del stage
    if cuda:
        torch.cuda.empty_cache()
    return rows


def profile_generate(args: argparse.Namespace, variant: str, steps: int, top: int = 30) -> str:
    """torch.profiler's top operators (by device time on a GPU) over one warm ``generate`` of ``variant``."""
    stage = build_stage(args.preset, variant)
    image = warm_up_image(stage.cond_size, backdrop=0)
    request = ShapeRequest("mesh", 0, keep_color_field=True, flow=FlowOptions(ss_steps=steps, slat_steps=steps))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if stage.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    stage.generate(image, request)  # warm (compiles and captures in the fast variant)
    with torch.profiler.profile(activities=activities) as prof:
        stage.generate(image, request)
        synchronize(stage.device)
    key = "self_device_time_total" if stage.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


#: (name, query tokens, key tokens) per item of a guided batch of 2, 16 heads of 64: the first flow's
#: self-attention (16^3 tokens), and the second flow's self- and cross-attention over the planted
#: shell's 3,928 pooled voxels against the image's 1,374 DINOv2 tokens.
ATTENTION_SHAPES = (("structure self", 4096, 4096), ("latent self", 3928, 3928), ("latent cross", 3928, 1374))
SDPA_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)


def attention_table(repeats: int = 20) -> str:
    """Milliseconds per bf16 SDPA call of each backend at ``ATTENTION_SHAPES`` (CUDA events)."""
    # None: no restriction, PyTorch's own pick at this shape (compare its time with the named ones).
    backends: list[SDPBackend | None] = [None, *SDPA_BACKENDS]
    names = ["default" if b is None else b.name for b in backends]
    lines = ["| shape | " + " | ".join(names) + " |", "|---|" + "---:|" * len(backends)]
    for name, queries, keys in ATTENTION_SHAPES:
        q = torch.randn(2, 16, queries, 64, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(2, 16, keys, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        cells = []
        for backend in backends:
            try:
                with contextlib.nullcontext() if backend is None else sdpa_kernel([backend]):
                    for _ in range(3):
                        F.scaled_dot_product_attention(q, k, v)
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(repeats):
                        F.scaled_dot_product_attention(q, k, v)
                    end.record()
                    torch.cuda.synchronize()
                cells.append(f"{start.elapsed_time(end) / repeats:.3f}")
            except RuntimeError as error:  # a backend that refuses this shape or card
                cells.append(f"n/a ({str(error).splitlines()[0][:40]})")
        lines.append(f"| {name} ({queries} x {keys}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latent_difference(out: Path, variant: str, steps: int) -> float | None:
    """Relative L2 difference of ``variant``'s structured latent from the eager one's (same seed and
    weights), or None without an eager run at these steps."""
    eager = out / f"latent_eager_{steps}.pt"
    if not eager.exists():
        return None
    ours, reference = (torch.load(path, weights_only=True) for path in (out / f"latent_{variant}_{steps}.pt", eager))
    return float((ours - reference).norm() / reference.norm())


def _relative(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| variant | steps | image -> GLB p50 | generate | structure | latent | mesh decode | remesh (CPU) | bake | GLB "
        "| splat | peak GiB | latent vs eager |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['total']:.3f} s | {r['generate']:.3f} | "
            f"{r.get('phase_sample_structure', 0):.3f} | {r.get('phase_sample_latent', 0):.3f} | "
            f"{r.get('phase_decode_mesh', 0):.3f} | {r['remesh_cpu']:.3f} | {r['bake']:.3f} | {r['export_glb']:.3f} | "
            f"{r['splat_s']:.3f} | {r['peak_gib']:.1f} | {_relative(r.get('latent_vs_eager'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available() and args.preset != "quality_tiny":
        raise SystemExit("bench_trellis needs a CUDA GPU for full-size weights (--preset quality_tiny checks it on a CPU)")
    args.out.mkdir(parents=True, exist_ok=True)
    steps_list = [int(s) for s in args.steps.split(",")]
    rows = []
    for variant in args.variants.split(","):
        try:
            rows += bench_variant(variant, steps_list, args)
        except Exception:  # one variant failing (a compile, a capture) must not lose the others' rows
            traceback.print_exc()
            print(f"variant {variant} failed; continuing", flush=True)
    for row in rows:
        row["latent_vs_eager"] = latent_difference(args.out, row["variant"], row["steps"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    meta = {"device": device, "torch": torch.__version__, "preset": args.preset, "mode": "random weights"}
    (args.out / "bench_trellis.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(table(rows))
    if args.attention:
        text = attention_table()
        (args.out / "attention.md").write_text(text)
        print(text)
    if args.profile:
        text = profile_generate(args, args.profile, steps_list[0])
        (args.out / "profile.txt").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
