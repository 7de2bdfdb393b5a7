"""Where FLUX's GPU time goes: a kernel profile of warm text_to_image calls, grouped by kind.

    python -m scripts.flux_profile --out OUT [--preset random] [--set cuda_graphs=false] [--calls 3]

Builds the preset's text_to_image stage as a replica does (``random``: full-size random weights,
fp8, compiled, CUDA graphs), warms it, then records ``--calls`` default requests with
torch.profiler. Every kernel (CUDA graph replays included: CUPTI traces the kernels inside them)
is put in one kind by its name (``kernel_kind``): fp8 and bf16 matrix products, the Triton
kernels that scale activations to fp8 row by row, other fused Triton code, attention, the VAE's
convolutions and norms, other elementwise work, copies. Per kind: milliseconds per image,
share of the kernel time and kernel count; then the busiest kernels, and the card's busy time (the
union of kernel intervals) against the calls' wall time, whose difference is time the card waited
for the host. On a CPU preset the same tables come from the operators' self CPU time.

Writes ``flux_profile.json`` and ``flux_profile.md`` to ``--out``; ``--trace`` also keeps the
Chrome trace for a viewer.
"""

import argparse
import logging
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch.autograd import DeviceType

from gen3d.config import load_preset, parse_overrides
from gen3d.stages.text_to_image import TextToImage
from scripts.bench_flux import PROMPT
from scripts.flux_check import stage_parser, write_report
from scripts.gpu_timeline import union

#: (kind, substrings of a lower-cased kernel or operator name), first match wins. The order
#: matters: an fp8 GEMM's name also says "gemm", a Triton fused norm also says "triton".
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("copy", ("memcpy", "memset", "aten::copy_", "aten::to", "direct_copy")),
    # Inductor's fused kernels are named after every op they fuse (``_scaled_mm``, ``attention``):
    # they are elementwise and reduction work, never the product itself.
    ("fp8 activation scaling (Triton)", ("triton_red_fused__scaled_mm", "triton_poi_fused__scaled_mm", "amax")),
    ("Triton fused", ("triton",)),
    ("attention", ("flash", "fmha", "cudnn_generated", "sdpa", "attention")),
    ("conv", ("conv", "fprop_implicit_gemm", "nchwtonhwc", "nhwctonchw", "winograd")),
    ("GEMM fp8", ("e4m3", "f8f8", "qqtst", "ovscale", "fp8", "scaled_mm", "float8")),
    ("GEMM bf16/fp32", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear")),
    ("norm", ("layer_norm", "rms_norm", "layernorm", "rmsnorm", "group_norm", "rowwisemoments")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "aten::")),
)


def kernel_kind(name: str) -> str:
    """The kind of a kernel (or CPU operator) by its name; ``other`` when no rule matches."""
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def kernel_events(prof: torch.profiler.profile) -> list[tuple[str, float, float]]:
    """(name, start µs, end µs) of every device kernel, copy and set the profiler recorded."""
    return [
        (event.name, float(event.time_range.start), float(event.time_range.end))
        for event in prof.events()
        if event.device_type == DeviceType.CUDA
    ]


def cpu_operator_times(prof: torch.profiler.profile) -> list[tuple[str, float, int]]:
    """(operator, self CPU µs, calls) of every operator: where a CPU preset's time went, without double counting."""
    return [(row.key, float(row.self_cpu_time_total), row.count) for row in prof.key_averages() if row.self_cpu_time_total > 0]


def summarise(times: list[tuple[str, float, int]], images: int, top: int) -> dict[str, Any]:
    """Per kind and per name: milliseconds per image, share of the total and count, busiest first.

    ``times`` holds (name, µs, count) rows: one per kernel launch on a GPU, one per operator on a CPU.
    """
    total_us = sum(us for _, us, _ in times) or 1.0
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for name, us, count in times:
        for group in (by_kind[kernel_kind(name)], by_name[name]):
            group[0] += us
            group[1] += count

    def rows(groups: dict[str, list[float]]) -> list[dict[str, Any]]:
        ordered = sorted(groups.items(), key=lambda item: -item[1][0])
        return [
            {"name": key, "ms_per_image": us / 1000 / images, "share": us / total_us, "count": int(count)}
            for key, (us, count) in ordered
        ]

    return {"total_ms_per_image": total_us / 1000 / images, "kinds": rows(by_kind), "top": rows(by_name)[:top]}


def busy_ms(events: list[tuple[str, float, float]]) -> float:
    """Milliseconds with at least one kernel running (overlapping kernels count once)."""
    if not events:
        return 0.0
    spans = union(np.array([(start, end) for _, start, end in events], dtype=np.float64))
    return float((spans[:, 1] - spans[:, 0]).sum()) / 1000


def profile_calls(stage: TextToImage, calls: int) -> tuple[torch.profiler.profile, float]:
    """The profiler over ``calls`` default requests of a warmed stage, and their wall seconds."""
    cfg = stage.cfg
    activities = [torch.profiler.ProfilerActivity.CPU]
    if stage.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for seed in range(calls):
            stage.generate(PROMPT, seed, cfg.steps, cfg.width, cfg.height)
        if stage.device.type == "cuda":
            torch.cuda.synchronize(stage.device)
        wall_s = time.perf_counter() - start
    return prof, wall_s


def report_for(prof: torch.profiler.profile, wall_s: float, calls: int, cuda: bool, top: int) -> dict[str, Any]:
    """The profile's tables: kernels on a GPU, operators' self time on a CPU."""
    report: dict[str, Any] = {"calls": calls, "wall_ms_per_image": wall_s * 1000 / calls}
    if cuda:
        events = kernel_events(prof)
        report["source"] = "CUDA kernels"
        report["busy_ms_per_image"] = busy_ms(events) / calls
        report |= summarise([(name, end - start, 1) for name, start, end in events], calls, top)
    else:
        report["source"] = "CPU operators, self time"
        report |= summarise(cpu_operator_times(prof), calls, top)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The kinds table, the busiest kernels and the busy/wall line."""
    lines = [
        f"{report['device']}, preset `{report['preset']}` {report['overrides'] or ''}, {report['calls']} calls, "
        f"{report['source']}: {report['total_ms_per_image']:.1f} ms per image in all.",
        "",
        "| kind | ms per image | share | count per image |",
        "|---|---:|---:|---:|",
    ]
    calls = report["calls"]
    for row in report["kinds"]:
        lines.append(f"| {row['name']} | {row['ms_per_image']:.2f} | {row['share']:.1%} | {row['count'] / calls:.0f} |")
    lines += ["", "| kernel | ms per image | share | count per image |", "|---|---:|---:|---:|"]
    for row in report["top"]:
        lines.append(f"| `{row['name'][:90]}` | {row['ms_per_image']:.2f} | {row['share']:.1%} | {row['count'] / calls:.0f} |")
    if "busy_ms_per_image" in report:
        lines.append(
            f"\nCard busy {report['busy_ms_per_image']:.1f} ms per image of {report['wall_ms_per_image']:.1f} ms wall "
            f"({report['busy_ms_per_image'] / report['wall_ms_per_image']:.0%})."
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="profiled requests (after warm-up)")
    parser.add_argument("--top", type=int, default=25, help="kernels listed by name")
    parser.add_argument("--trace", action="store_true", help="also write the Chrome trace (trace.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = parse_overrides(args.set)
    cfg = load_preset(args.preset, {"text_to_image": overrides}).text_to_image
    stage = TextToImage.from_config(cfg)
    stage.warmup()
    prof, wall_s = profile_calls(stage, args.calls)
    cuda = stage.device.type == "cuda"
    report = report_for(prof, wall_s, args.calls, cuda, args.top)
    report |= {"device": torch.cuda.get_device_name(stage.device) if cuda else "cpu", "preset": args.preset, "overrides": overrides}
    write_report(args.out, "flux_profile", report, markdown(report))
    if args.trace:
        prof.export_chrome_trace(str(args.out / "trace.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
