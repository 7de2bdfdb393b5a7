"""Capacity model of the served graph: assets/s, p50 and the bottleneck for N GPUs.

``python -m scripts.capacity --gpus 1 2 4 8`` predicts for the generated configs
(``configs/serve_gpus_<N>.yaml``) from the stage seconds of BENCHMARKS.md. ``--bench bench.json``
takes the seconds from a ``scripts/bench.py`` run instead, ``--seconds bake=0.04`` sets single
ones, ``--config`` names another serve config and ``--replicas NAME=COUNT[@SHARE]`` changes one
deployment of it. ``--measured GPUS=ASSETS_PER_S`` prints the model's error against a measurement.
Batching and the card's real busy time are inputs too: ``--batched text_to_image=4:0.36`` (a call
serving 4 requests takes 0.36 s: the replica's throughput), ``--card-seconds stage=s`` (GPU busy
seconds per request on its card, instead of the stage's wall seconds) and ``--timeline
timeline.json`` (those busy seconds from ``scripts/gpu_timeline.py``).

The model itself (a linear program over replicas, cards, cores, ingress and proxy) is
``scripts/capacity_model.py``; this file places a serve config's replicas and reads the inputs.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from scripts.capacity_model import (
    CALL_DEPLOYMENT,
    DEPLOYMENT_ROLE,
    INGRESS,
    Layout,
    Replica,
    Workload,
    p50_at,
    rate_at,
    solve,
)

ROOT = Path(__file__).resolve().parent.parent


def replica_count(deployment: dict[str, Any], counts: str) -> int:
    """Replicas of one serve-config deployment: ``max`` or ``min`` of its autoscaling range."""
    auto = deployment.get("autoscaling_config")
    if auto is None:
        return int(deployment.get("num_replicas", 1))
    return int(auto["max_replicas"] if counts == "max" else auto["min_replicas"])


def place(wanted: list[tuple[str, float, float]], gpus: int) -> tuple[Replica, ...]:
    """Put replicas on cards as Ray does within a node: first fit, largest shares first.

    Ray gives a fractional ``num_gpus`` the first card with room (four actors at 0.4 on four
    cards land on cards 0, 0, 1, 1), so FLUX at 0.6 takes one card each and smaller shares fill
    card 0 first.

    Args:
        wanted: (deployment, num_gpus, num_cpus) per replica.
        gpus: cards on the node.

    Raises:
        ValueError: a replica fits no card (Ray would leave it pending).
    """
    free = [1.0] * gpus
    placed = []
    for deployment, share, cpus in sorted(wanted, key=lambda item: -item[1]):
        card = None
        if share > 0:
            card = next((i for i, room in enumerate(free) if room >= share - 1e-9), None)
            if card is None:
                raise ValueError(f"{deployment}: a replica with num_gpus {share} fits no card of {gpus}; Ray leaves it pending")
            free[card] -= share
        placed.append(Replica(deployment, share, max(cpus, 1.0), card))
    return tuple(placed)


def layout_from_config(
    config: dict[str, Any], gpus: int, cpus: float, counts: str = "max", changes: dict[str, tuple[int, float | None]] | None = None
) -> Layout:
    """The replicas of a serve config's gen3d application, placed on ``gpus`` cards.

    Args:
        config: a parsed serve config.
        gpus, cpus: the machine.
        counts: ``max`` or ``min`` replicas of autoscaled deployments.
        changes: deployment -> (replicas, num_gpus or None to keep the config's).
    """
    wanted = []
    for deployment in config["applications"][0]["deployments"]:
        name = deployment["name"]
        options = deployment.get("ray_actor_options", {})
        count, share = (changes or {}).get(name, (replica_count(deployment, counts), None))
        share = options.get("num_gpus", 0.0) if share is None else share
        wanted += [(name, share, options.get("num_cpus", 1.0))] * count
    return Layout(place(wanted, gpus), gpus, cpus)


def workload_from_bench(path: Path, base: Workload) -> Workload:
    """``base`` with the stage seconds, overhead and answer size of a ``scripts/bench.py`` run.

    Its sequential run's medians are the uncontended stage times; the overhead is its median
    ``total`` less their sum.
    """
    median = json.loads(path.read_text())["runs"]["sequential"]["summary"]["median"]
    seconds = {call: median[call] for call in CALL_DEPLOYMENT if median.get(call) is not None}
    if not seconds:
        raise ValueError(f"{path}: its sequential run has no successful request to take stage times from")
    overhead = max(median["total"] - sum(seconds.values()), 0.0)
    return replace(base, seconds=seconds, overhead_s=overhead, asset_mb=median["size_bytes"] / 1e6)


def card_seconds_from_timeline(path: Path) -> dict[str, float]:
    """GPU busy seconds per request by stage call from a ``scripts/gpu_timeline.py`` report.

    Its window of single requests when it has one: under time-slicing the loaded window's kernels
    also count other processes' slices.
    """
    report = json.loads(path.read_text())
    rows = (report.get("alone") or report)["stages"]
    return {call: row["gpu_ms_per_item"] / 1e3 for call, row in rows.items() if call in CALL_DEPLOYMENT}


def parse_batched(values: list[str]) -> dict[str, tuple[int, float]]:
    """``--batched text_to_image=4:0.36`` -> ``{"text_to_image": (4, 0.36)}``."""
    batched = {}
    for call, spec in parse_pairs(values, "--batched").items():
        size, sep, seconds = spec.partition(":")
        if not sep:
            raise ValueError(f"--batched: expected CALL=SIZE:SECONDS, got {call}={spec}")
        batched[call] = (int(size), float(seconds))
    return batched


def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``, naming the flag on a malformed value."""
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise ValueError(f"{flag}: expected NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def parse_replicas(values: list[str]) -> dict[str, tuple[int, float | None]]:
    """``--replicas TextToImageDeployment=2@0.6`` -> ``{"TextToImageDeployment": (2, 0.6)}``."""
    changes = {}
    for name, spec in parse_pairs(values, "--replicas").items():
        count, _, share = spec.partition("@")
        changes[name] = (int(count), float(share) if share else None)
    return changes


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The flags that say what a request costs and what the machine has (shared with scripts/serve_config.py)."""
    parser.add_argument("--bench", type=Path, help="bench.json of scripts/bench.py: stage seconds, overhead, size")
    parser.add_argument("--seconds", nargs="*", default=[], help="stage seconds, e.g. bake=0.04 remesh=0.3")
    parser.add_argument("--batched", nargs="*", default=[], help="CALL=SIZE:SECONDS: one call serving SIZE requests under load")
    parser.add_argument("--card-seconds", nargs="*", default=[], help="CALL=SECONDS of GPU busy time per request")
    parser.add_argument("--timeline", type=Path, help="timeline.json of scripts/gpu_timeline.py: GPU busy seconds per request")
    parser.add_argument("--prompt-share", type=float, default=1.0, help="share of text prompts (image prompts skip FLUX)")
    parser.add_argument("--cpus-per-gpu", type=float, default=16.0, help="cores of the machine per card")
    parser.add_argument("--clients-per-gpu", type=int, default=8, help="closed-loop clients per card")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8], help="card counts to predict for")
    parser.add_argument("--config", type=Path, help="serve config (default: configs/serve_gpus_<N>.yaml per N)")
    parser.add_argument("--replicas", nargs="*", default=[], help="NAME=COUNT[@NUM_GPUS] over the config's")
    parser.add_argument("--counts", choices=("max", "min"), default="max", help="autoscaled deployments at max or min")
    parser.add_argument("--measured", nargs="*", default=[], help="GPUS=ASSETS_PER_S to compare with")
    parser.add_argument("--json", type=Path, help="also write the predictions here")
    add_workload_args(parser)
    return parser.parse_args(argv)


def workload_from_args(args: argparse.Namespace) -> Workload:
    """The workload the flags of ``add_workload_args`` describe."""
    base = Workload(prompt_share=args.prompt_share)
    if args.bench is not None:
        base = workload_from_bench(args.bench, base)
    seconds = {**base.seconds, **{k: float(v) for k, v in parse_pairs(args.seconds, "--seconds").items()}}
    card = card_seconds_from_timeline(args.timeline) if args.timeline is not None else {}
    card.update({k: float(v) for k, v in parse_pairs(args.card_seconds, "--card-seconds").items()})
    return replace(base, seconds=seconds, batched=parse_batched(args.batched), card_seconds=card)


def predict(args: argparse.Namespace, workload: Workload, gpus: int) -> dict[str, Any]:
    """One row of the report: the layout, its capacity and latencies at the per-card client count."""
    path = args.config or ROOT / "configs" / f"serve_gpus_{gpus}.yaml"
    cpus = args.cpus_per_gpu * gpus
    layout = layout_from_config(yaml.safe_load(path.read_text()), gpus, cpus, args.counts, parse_replicas(args.replicas))
    capacity = solve(workload, layout)
    clients = args.clients_per_gpu * gpus
    return {
        "gpus": gpus,
        "config": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "replicas": {d: layout.count(d) for d in (*DEPLOYMENT_ROLE, INGRESS)},
        "assets_per_s": capacity.assets_per_s,
        "clients": clients,
        "assets_per_s_at_clients": rate_at(workload, capacity, clients),
        "p50_sequential_s": workload.sequential_s(),
        "p50_at_clients_s": p50_at(workload, capacity, clients),
        "bottleneck": capacity.bottleneck,
        "busy": capacity.busy,
    }


def markdown(rows: list[dict[str, Any]], measured: dict[int, float]) -> str:
    """The predictions as a table, with the error against measurements where given."""
    lines = [
        "| GPUs | FLUX / BG / TripoSR / export / ingress | assets/s | clients | assets/s there | p50 seq | p50 there | bottleneck | measured | error |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        counts = " / ".join(str(n) for n in row["replicas"].values())
        seen = measured.get(row["gpus"])
        error = "–" if seen is None else f"{(row['assets_per_s_at_clients'] - seen) / seen:+.1%}"
        lines.append(
            f"| {row['gpus']} | {counts} | {row['assets_per_s']:.2f} | {row['clients']} | "
            f"{row['assets_per_s_at_clients']:.2f} | {row['p50_sequential_s']:.3f} s | {row['p50_at_clients_s']:.3f} s | "
            f"{row['bottleneck']} | {'–' if seen is None else f'{seen:.2f}'} | {error} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        workload = workload_from_args(args)
        measured = {int(k): float(v) for k, v in parse_pairs(args.measured, "--measured").items()}
        rows = [predict(args, workload, gpus) for gpus in args.gpus]
    except (ValueError, FileNotFoundError) as err:
        print(f"capacity: {err}", file=sys.stderr)
        return 2
    print(f"stage seconds {workload.seconds}, overhead {workload.overhead_s:.3f} s, text prompts {workload.prompt_share:.0%}")
    if workload.batched or workload.card_seconds:
        print(f"batched calls {workload.batched}, card busy seconds {workload.card_seconds}")
    print(markdown(rows, measured))
    if args.json is not None:
        args.json.write_text(json.dumps({"workload": workload.__dict__, "predictions": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
