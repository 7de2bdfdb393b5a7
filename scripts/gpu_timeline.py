"""Merge the replicas' GPU traces of one window onto one clock and say where the card's time went.

    python -m scripts.gpu_timeline TRACES/load8 --alone TRACES/alone --out OUT

Reads the ``*.calls.json`` + ``*.trace.json`` pairs that ``gen3d.service.gpu_trace`` writes (one
per GPU replica; every replica of the window must be on one card). Kineto gives each trace its own
time base (``baseTimeNanoseconds``) and event times in microseconds after it; adding the two puts
every replica on the Unix clock, the one its calls were timed with, and each replica's kernels are
checked to fall inside its own recording. Within the span where every replica recorded:

- **GPU ms per item by stage**: kernel time (union within the replica) during each call of the
  stage, per request served (``bake`` is image_to_3d's second method);
- **busy**: the share of the span with any kernel running (the union over replicas);
- **concurrent**: the share of the busy time with kernels of more than one process at once,
  which only MPS allows (time-slicing runs one context at a time);
- **idle gaps** between busy intervals: count, total, median and 90th percentile;
- with ``--alone`` (a window of one request at a time), **the cost of sharing the card**: each
  stage's kernel time per item and wall time per call under load against alone.

Writes ``timeline.json`` and ``timeline.md`` to ``--out`` and prints the tables.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_CATEGORY = "kernel"
COPY_CATEGORIES = ("gpu_memcpy", "gpu_memset")
CALLS_SUFFIX = ".calls.json"
TRACE_SUFFIX = ".trace.json"
#: How far (µs) a kernel may lie outside its replica's recording before the clocks count as misaligned.
ALIGN_SLACK_US = 5_000.0
#: Gaps at least this long (µs) are idle time worth naming; shorter ones are launch spacing.
LONG_GAP_US = 100.0
#: The stages that count assets, first found first: FLUX for text prompts, else background removal.
ASSET_STAGES = ("text_to_image", "background")
ROW_ORDER = ("text_to_image", "background", "image_to_3d", "bake")


@dataclass(frozen=True)
class Call:
    """One stage call, µs after the window's origin."""

    method: str
    items: int
    start_us: float
    end_us: float


@dataclass(frozen=True)
class ReplicaTrace:
    """One replica's window: its calls and its GPU activity, sorted by start.

    Attributes:
        name: the file stem (``<stage>-<pid>``).
        stage: its stage.
        start_us, end_us: when it recorded (µs after the window's origin, as every time here).
        calls: its calls in the window.
        kernels: (N, 2) kernel start and end.
        copies: (M, 2) memcpy and memset start and end.
        misaligned: share of its GPU events outside its own recording (clock check).
    """

    name: str
    stage: str
    start_us: float
    end_us: float
    calls: tuple[Call, ...]
    kernels: np.ndarray
    copies: np.ndarray
    misaligned: float


def row_name(stage: str, method: str) -> str:
    """The table row a call belongs to: its stage, or ``bake`` for image_to_3d's bake."""
    return "bake" if method == "bake" else stage


def intervals(events: list[dict[str, Any]], base_us: float, categories: tuple[str, ...]) -> np.ndarray:
    """(N, 2) start/end µs (event time + ``base_us``) of the complete events of ``categories``, sorted."""
    rows = [(e["ts"], e["ts"] + e.get("dur", 0.0)) for e in events if e.get("ph") == "X" and e.get("cat") in categories]
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 2) + base_us
    return array[np.argsort(array[:, 0], kind="stable")]


def load_replica(calls_path: Path, origin_ns: int) -> ReplicaTrace:
    """Read one replica's calls file and its trace, on the Unix clock as µs after ``origin_ns``.

    Times are taken relative to ``origin_ns`` in integer nanoseconds first: as absolute µs a
    float64 keeps only about a quarter of a microsecond.

    Raises:
        ValueError: the trace has no ``baseTimeNanoseconds`` (its times cannot be aligned).
    """
    meta = json.loads(calls_path.read_text())
    name = calls_path.name.removesuffix(CALLS_SUFFIX)
    trace = json.loads((calls_path.parent / f"{name}{TRACE_SUFFIX}").read_text())
    if "baseTimeNanoseconds" not in trace:
        raise ValueError(f"{calls_path.parent / name}{TRACE_SUFFIX}: no baseTimeNanoseconds; cannot put it on a common clock")

    def us(unix_ns: int) -> float:
        return (unix_ns - origin_ns) / 1e3

    base_us = us(int(trace["baseTimeNanoseconds"]))
    events = trace.get("traceEvents", [])
    kernels = intervals(events, base_us, (KERNEL_CATEGORY,))
    copies = intervals(events, base_us, COPY_CATEGORIES)
    start_us, end_us = us(meta["start_ns"]), us(meta["end_ns"])
    everything = np.concatenate([kernels, copies])
    outside = (everything[:, 0] < start_us - ALIGN_SLACK_US) | (everything[:, 1] > end_us + ALIGN_SLACK_US)
    calls = tuple(Call(c["method"], c["items"], us(c["start_ns"]), us(c["end_ns"])) for c in meta["calls"])
    misaligned = float(outside.mean()) if len(everything) else 0.0
    return ReplicaTrace(name, meta["stage"], start_us, end_us, calls, kernels, copies, misaligned)


def load_window(folder: Path) -> list[ReplicaTrace]:
    """Every replica trace of one window folder, by name, in µs after the earliest recording's start."""
    paths = sorted(folder.glob(f"*{CALLS_SUFFIX}"))
    if not paths:
        return []
    origin_ns = min(json.loads(path.read_text())["start_ns"] for path in paths)
    return [load_replica(path, origin_ns) for path in paths]


def union(spans: np.ndarray) -> np.ndarray:
    """Merge overlapping (N, 2) intervals into disjoint ones, sorted."""
    if len(spans) == 0:
        return spans.reshape(0, 2)
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    ends = np.maximum.accumulate(spans[:, 1])
    starts_group = np.ones(len(spans), dtype=bool)
    starts_group[1:] = spans[1:, 0] > ends[:-1]
    first = np.flatnonzero(starts_group)
    last = np.append(first[1:] - 1, len(spans) - 1)
    return np.column_stack([spans[first, 0], ends[last]])


def clip(spans: np.ndarray, low: float, high: float) -> np.ndarray:
    """The parts of ``spans`` inside [low, high]."""
    clipped = np.column_stack([np.maximum(spans[:, 0], low), np.minimum(spans[:, 1], high)]) if len(spans) else spans
    return clipped[clipped[:, 1] > clipped[:, 0]] if len(clipped) else clipped.reshape(0, 2)


def coverage(per_process: list[np.ndarray]) -> tuple[float, float]:
    """(µs with at least one process busy, µs with two or more) over disjoint per-process intervals."""
    spans = [s for s in per_process if len(s)]
    if not spans:
        return 0.0, 0.0
    times = np.concatenate([np.concatenate([s[:, 0], s[:, 1]]) for s in spans])
    steps = np.concatenate([np.concatenate([np.ones(len(s)), -np.ones(len(s))]) for s in spans])
    order = np.lexsort((steps, times))  # at equal times an end comes before a start: touching is not overlap
    level = np.cumsum(steps[order])[:-1]
    lengths = np.diff(times[order])
    return float(lengths[level >= 1].sum()), float(lengths[level >= 2].sum())


def gaps(busy: np.ndarray, low: float, high: float) -> np.ndarray:
    """Lengths (µs) of the idle stretches of [low, high] between disjoint busy intervals."""
    edges = np.concatenate([[low], busy.reshape(-1)], axis=0) if len(busy) else np.array([low])
    edges = np.append(edges, high)
    idle = edges[1::2] - edges[0::2]
    return idle[idle > 0]


def call_busy_us(replica: ReplicaTrace, call: Call) -> float:
    """Kernel time (union) of the kernels the replica started during ``call``."""
    first, last = np.searchsorted(replica.kernels[:, 0], [call.start_us, call.end_us])
    return float(np.diff(union(replica.kernels[first:last]), axis=1).sum())


def stage_rows(replicas: list[ReplicaTrace]) -> dict[str, dict[str, float]]:
    """Per table row: calls, items, GPU ms per item, GPU ms per call and wall ms per call."""
    sums: dict[str, dict[str, float]] = {}
    for replica in replicas:
        for call in replica.calls:
            row = sums.setdefault(row_name(replica.stage, call.method), {"calls": 0, "items": 0, "gpu_us": 0.0, "wall_us": 0.0})
            row["calls"] += 1
            row["items"] += call.items
            row["gpu_us"] += call_busy_us(replica, call)
            row["wall_us"] += call.end_us - call.start_us
    ordered = sorted(sums, key=lambda name: ROW_ORDER.index(name) if name in ROW_ORDER else len(ROW_ORDER))
    return {
        name: {
            "calls": sums[name]["calls"],
            "items": sums[name]["items"],
            "gpu_ms_per_item": sums[name]["gpu_us"] / 1e3 / max(sums[name]["items"], 1),
            "gpu_ms_per_call": sums[name]["gpu_us"] / 1e3 / max(sums[name]["calls"], 1),
            "wall_ms_per_call": sums[name]["wall_us"] / 1e3 / max(sums[name]["calls"], 1),
        }
        for name in ordered
    }


def assets_in(replicas: list[ReplicaTrace], low: float, high: float) -> int:
    """Requests served inside [low, high] by the first asset-counting stage present (call midpoints)."""
    for stage in ASSET_STAGES:
        calls = [c for r in replicas if r.stage == stage for c in r.calls]
        if calls:
            return sum(c.items for c in calls if low <= (c.start_us + c.end_us) / 2 <= high)
    return 0


def card_summary(replicas: list[ReplicaTrace]) -> dict[str, Any]:
    """Busy share, concurrency and idle gaps over the span where every replica recorded."""
    low, high = max(r.start_us for r in replicas), min(r.end_us for r in replicas)
    if high <= low:
        raise ValueError("the replicas' recordings do not overlap: open and close one window for all of them")
    per_process = [clip(union(r.kernels), low, high) for r in replicas]
    busy_us, concurrent_us = coverage(per_process)
    idle = gaps(union(np.concatenate(per_process)), low, high)
    long = idle[idle >= LONG_GAP_US]
    span_us = high - low
    assets = assets_in(replicas, low, high)
    copies_us = sum(float(np.diff(clip(union(r.copies), low, high), axis=1).sum()) for r in replicas)
    return {
        "span_s": span_us / 1e6,
        "replicas": [r.name for r in replicas],
        "assets": assets,
        "assets_per_s": assets / (span_us / 1e6),
        "busy_fraction": busy_us / span_us,
        "concurrent_fraction_of_busy": concurrent_us / busy_us if busy_us else 0.0,
        "busy_ms_per_asset": busy_us / 1e3 / assets if assets else None,
        "copy_ms": copies_us / 1e3,
        "gaps": {
            "count": len(idle),
            "total_ms": float(idle.sum() / 1e3),
            "p50_us": float(np.percentile(idle, 50)) if len(idle) else 0.0,
            "p90_us": float(np.percentile(idle, 90)) if len(idle) else 0.0,
            "long_count": len(long),
            "long_total_ms": float(long.sum() / 1e3),
        },
        "misaligned": {r.name: r.misaligned for r in replicas},
    }


def slicing_rows(load: dict[str, dict[str, float]], alone: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage: GPU ms per item and wall ms per call alone and under load, and their ratios."""
    rows = {}
    for name, under in load.items():
        if name not in alone:
            continue
        base = alone[name]
        rows[name] = {
            "gpu_ms_per_item_alone": base["gpu_ms_per_item"],
            "gpu_ms_per_item_load": under["gpu_ms_per_item"],
            "gpu_stretch": under["gpu_ms_per_item"] / base["gpu_ms_per_item"] if base["gpu_ms_per_item"] else None,
            "wall_ms_per_call_alone": base["wall_ms_per_call"],
            "wall_ms_per_call_load": under["wall_ms_per_call"],
            "wall_stretch": under["wall_ms_per_call"] / base["wall_ms_per_call"] if base["wall_ms_per_call"] else None,
        }
    return rows


def analyse(load_dir: Path, alone_dir: Path | None = None) -> dict[str, Any]:
    """The whole report of one window (and, given, its comparison with a window of single requests)."""
    replicas = load_window(load_dir)
    if not replicas:
        raise ValueError(f"{load_dir}: no replica traces (*{CALLS_SUFFIX}); was GEN3D_PROFILE_DIR set for the GPU stages?")
    report: dict[str, Any] = {"window": str(load_dir), "card": card_summary(replicas), "stages": stage_rows(replicas)}
    if alone_dir is not None:
        alone = load_window(alone_dir)
        report["alone"] = {"window": str(alone_dir), "stages": stage_rows(alone)}
        report["slicing"] = slicing_rows(report["stages"], report["alone"]["stages"])
    return report


def _number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    """The card table, the stage table and (with a lone window) the time-slicing table."""
    card, gap = report["card"], report["card"]["gaps"]
    lines = [
        "| span | assets | assets/s | busy | concurrent (>1 process) | busy ms per asset | idle gaps: count, total | p50 / p90 gap | gaps ≥ 0.1 ms: count, total |",
        "|---:|---:|---:|---:|---:|---:|---|---|---|",
        (
            f"| {card['span_s']:.2f} s | {card['assets']} | {card['assets_per_s']:.2f} | {card['busy_fraction']:.1%} | "
            f"{card['concurrent_fraction_of_busy']:.1%} | {_number(card['busy_ms_per_asset'])} | "
            f"{gap['count']}, {gap['total_ms']:.0f} ms | {gap['p50_us']:.0f} / {gap['p90_us']:.0f} µs | "
            f"{gap['long_count']}, {gap['long_total_ms']:.0f} ms |"
        ),
        "",
        "| stage | calls | items | GPU ms per item | GPU ms per call | wall ms per call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["stages"].items():
        lines.append(
            f"| {name} | {row['calls']} | {row['items']} | {row['gpu_ms_per_item']:.1f} | {row['gpu_ms_per_call']:.1f} | "
            f"{row['wall_ms_per_call']:.1f} |"
        )
    if "slicing" in report:
        lines += [
            "",
            "| stage | GPU ms per item alone → under load | stretch | wall ms per call alone → under load | stretch |",
            "|---|---|---:|---|---:|",
        ]
        for name, row in report["slicing"].items():
            lines.append(
                f"| {name} | {row['gpu_ms_per_item_alone']:.1f} → {row['gpu_ms_per_item_load']:.1f} | "
                f"{_number(row['gpu_stretch'], 2, '×')} | {row['wall_ms_per_call_alone']:.1f} → {row['wall_ms_per_call_load']:.1f} | "
                f"{_number(row['wall_stretch'], 2, '×')} |"
            )
    worst = max(card["misaligned"].values(), default=0.0)
    if worst > 0.01:
        lines += ["", f"Clock check: up to {worst:.1%} of a replica's GPU events fall outside its recording (misaligned clocks?)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("window", type=Path, help="a window folder (<GEN3D_PROFILE_DIR>/<label>)")
    parser.add_argument("--alone", type=Path, help="a window of one request at a time, for the time-slicing table")
    parser.add_argument("--out", type=Path, help="write timeline.json and timeline.md here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = analyse(args.window, args.alone)
    except (ValueError, OSError) as err:
        print(f"gpu_timeline: {err}", file=sys.stderr)
        return 2
    text = markdown(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "timeline.json").write_text(json.dumps(report, indent=2))
        (args.out / "timeline.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
