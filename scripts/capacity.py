"""Capacity model of the served graph: assets/s, p50 and the bottleneck for N GPUs.

``python -m scripts.capacity --gpus 1 2 4 8`` predicts for the generated configs
(``configs/serve_gpus_<N>.yaml``) from the stage seconds of BENCHMARKS.md. ``--bench bench.json``
takes the seconds from a ``scripts/bench.py`` run instead, ``--seconds bake=0.04`` sets single
ones, ``--config`` names another serve config and ``--replicas NAME=COUNT[@SHARE]`` changes one
deployment of it. ``--measured GPUS=ASSETS_PER_S`` prints the model's error against a measurement.

The model. Every request visits each stage once (FLUX only for the text-prompt share). A replica
runs one call at a time. Replicas whose GPU shares sit on one card time-slice it, so a card does
at most one second of stage work per second. Ray Serve's router hands work to whichever replica
frees up first, which under load comes close to the best split of work over replicas. The best
split is a linear program: maximise the rate X such that the replicas of each deployment share X,
and every replica, card, the CPU cores, the ingress and the HTTP proxy do at most one second of
work per second (the cores: as many seconds as there are cores). The constraint with the largest
dual value names the bottleneck. Latency: the sequential p50 is the sum of the stage seconds plus
the graph's own overhead; C clients in a closed loop wait at least C / X (Little's law).
"""

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import linprog

ROOT = Path(__file__).resolve().parent.parent

#: The deployment that serves each stage call; remesh and bake are the UV-texture path.
CALL_DEPLOYMENT = {
    "text_to_image": "TextToImageDeployment",
    "background": "BackgroundDeployment",
    "image_to_3d": "ImageTo3DDeployment",
    "remesh": "ExportDeployment",
    "bake": "ImageTo3DDeployment",
    "export": "ExportDeployment",
}
#: What each bottleneck is called in the report.
DEPLOYMENT_ROLE = {
    "TextToImageDeployment": "FLUX replicas (text_to_image)",
    "BackgroundDeployment": "background-removal replicas",
    "ImageTo3DDeployment": "TripoSR replicas (image_to_3d, bake)",
    "ExportDeployment": "export replicas (remesh, export)",
}
INGRESS = "Ingress"
CARDS = "the GPUs"
CORES = "the CPU cores"
PROXY = "the HTTP proxy (bytes moved)"
#: Sequential medians of the fp8 graph on one H200 (BENCHMARKS.md, "Two GPUs"; 48 requests):
#: text -> the default UV-textured GLB (20k faces, 1024² texture), background IS-Net on the GPU.
MEASURED_SECONDS = {"text_to_image": 0.165, "background": 0.033, "image_to_3d": 0.026, "remesh": 0.095,
                    "bake": 0.030, "export": 0.028}  # fmt: skip
#: Their p50 total (0.406 s) less the sum of the stages: handles, transfers, HTTP.
MEASURED_OVERHEAD_S = 0.030
#: The median GLB of that run.
MEASURED_ASSET_MB = 0.643
#: CPU seconds of the ingress and the proxy per request (and per MB of answer), beyond their idle
#: use: ``scripts/serve_cpu_cost.py`` on the tiny graph on the 2-core development machine, whose
#: cores are slower than a GPU server's, so these overstate the cost there.
MEASURED_INGRESS_CPU_S = 0.016
MEASURED_PROXY_CPU_S = 0.007
MEASURED_PROXY_CPU_S_PER_MB = 0.0012


@dataclass(frozen=True)
class Workload:
    """What one request costs.

    Attributes:
        seconds: wall seconds of each stage call one request makes, without contention (keys of
            ``CALL_DEPLOYMENT``; a call left out is not made, e.g. remesh and bake for vertex colours).
        overhead_s: sequential latency outside the stages (proxy, ingress, handles, transfers).
        prompt_share: share of requests with a text prompt; image prompts skip FLUX.
        asset_mb: size of the answer in MB, carried by the HTTP proxy.
        ingress_cpu_s: event-loop seconds the ingress spends on one request.
        proxy_cpu_s: proxy seconds per request, plus ``proxy_cpu_s_per_mb`` per MB of answer.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict(MEASURED_SECONDS))
    overhead_s: float = MEASURED_OVERHEAD_S
    prompt_share: float = 1.0
    asset_mb: float = MEASURED_ASSET_MB
    ingress_cpu_s: float = MEASURED_INGRESS_CPU_S
    proxy_cpu_s: float = MEASURED_PROXY_CPU_S
    proxy_cpu_s_per_mb: float = MEASURED_PROXY_CPU_S_PER_MB

    def __post_init__(self) -> None:
        unknown = set(self.seconds) - set(CALL_DEPLOYMENT)
        if unknown:
            raise ValueError(f"seconds: unknown stage calls {sorted(unknown)}; expected some of {list(CALL_DEPLOYMENT)}")
        if any(value < 0 for value in self.seconds.values()):
            raise ValueError(f"seconds: every stage time must be >= 0, got {self.seconds}")
        if not 0.0 <= self.prompt_share <= 1.0:
            raise ValueError(f"prompt_share: expected 0..1, got {self.prompt_share}")

    def visits(self, call: str) -> float:
        """Calls of ``call`` per request on average."""
        return self.prompt_share if call == "text_to_image" else 1.0

    def work_s(self, deployment: str) -> float:
        """Seconds of work one request brings a deployment (all of its calls)."""
        return sum(t * self.visits(c) for c, t in self.seconds.items() if CALL_DEPLOYMENT[c] == deployment)

    def sequential_s(self) -> float:
        """Latency of a request alone in the graph."""
        return sum(t * self.visits(c) for c, t in self.seconds.items()) + self.overhead_s

    def proxy_s(self) -> float:
        """Proxy seconds per request, the bytes of its answer included."""
        return self.proxy_cpu_s + self.asset_mb * self.proxy_cpu_s_per_mb


@dataclass(frozen=True)
class Replica:
    """One replica as Ray places it.

    Attributes:
        deployment: its deployment's name.
        gpu_share: its ``num_gpus``.
        cpus: cores it keeps busy while it works (its ``num_cpus``, at least one thread).
        card: index of the card holding its GPU share, None without one.
    """

    deployment: str
    gpu_share: float
    cpus: float
    card: int | None = None


@dataclass(frozen=True)
class Layout:
    """Where the graph runs: its replicas on ``gpus`` cards and ``cpus`` cores."""

    replicas: tuple[Replica, ...]
    gpus: int
    cpus: float
    proxies: int = 1

    def count(self, deployment: str) -> int:
        return sum(r.deployment == deployment for r in self.replicas)


@dataclass(frozen=True)
class Capacity:
    """The model's answer for one layout and workload.

    Attributes:
        assets_per_s: the highest sustained rate.
        bottleneck: the resource that caps it.
        busy: each resource's busy share at that rate (replicas and cards averaged).
    """

    assets_per_s: float
    bottleneck: str
    busy: dict[str, float]


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


def _constraints(workload: Workload, layout: Layout) -> tuple[list[str], np.ndarray, np.ndarray, list[Replica]]:
    """Rows of ``A x <= b`` over x = (X, one rate per working replica), each with its resource's name."""
    working = [r for r in layout.replicas if workload.work_s(r.deployment) > 0]
    columns = 1 + len(working)
    names, rows, bounds = [], [], []

    def add(name: str, row: np.ndarray, bound: float) -> None:
        names.append(name)
        rows.append(row)
        bounds.append(bound)

    for index, replica in enumerate(working, start=1):
        row = np.zeros(columns)
        row[index] = workload.work_s(replica.deployment)
        add(DEPLOYMENT_ROLE.get(replica.deployment, replica.deployment), row, 1.0)
    for card in range(layout.gpus):
        row = np.zeros(columns)
        for index, replica in enumerate(working, start=1):
            if replica.card == card:
                row[index] = workload.work_s(replica.deployment)
        add(CARDS, row, 1.0)
    for name, (seconds, available) in shared_resources(workload, layout).items():
        row = np.zeros(columns)
        row[0] = seconds
        add(name, row, available)
    return names, np.array(rows), np.array(bounds), working


def shared_resources(workload: Workload, layout: Layout) -> dict[str, tuple[float, float]]:
    """Resources every request uses: (seconds of work per request, seconds available per second)."""
    cores = {r.deployment: r.cpus for r in layout.replicas}
    core_s = sum(workload.work_s(d) * c for d, c in cores.items()) + workload.ingress_cpu_s + workload.proxy_s()
    return {
        CORES: (core_s, layout.cpus),
        INGRESS: (workload.ingress_cpu_s, float(layout.count(INGRESS))),
        PROXY: (workload.proxy_s(), float(layout.proxies)),
    }


def solve(workload: Workload, layout: Layout) -> Capacity:
    """The highest rate the layout sustains, its bottleneck and every resource's busy share.

    Raises:
        ValueError: a stage the requests visit has no replica, or the ingress has none.
    """
    used = {CALL_DEPLOYMENT[c] for c, t in workload.seconds.items() if t * workload.visits(c) > 0}
    missing = sorted(d for d in used | {INGRESS} if layout.count(d) == 0)
    if missing:
        raise ValueError(f"the layout has no replica of {missing}")
    names, a_ub, b_ub, working = _constraints(workload, layout)
    groups = sorted({r.deployment for r in working})
    a_eq = np.zeros((len(groups), a_ub.shape[1]))
    for row, deployment in enumerate(groups):
        a_eq[row, 0] = -1.0
        for index, replica in enumerate(working, start=1):
            a_eq[row, index] = replica.deployment == deployment
    objective = np.zeros(a_ub.shape[1])
    objective[0] = -1.0
    result = linprog(objective, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(len(groups)), method="highs")
    if result.status != 0:
        raise RuntimeError(f"the capacity program failed: {result.message}")
    rate = float(result.x[0])
    weight: dict[str, float] = defaultdict(float)
    for name, dual in zip(names, result.ineqlin.marginals, strict=True):
        weight[name] += abs(dual)
    return Capacity(rate, max(weight, key=weight.get), busy_shares(workload, layout, rate))


def busy_shares(workload: Workload, layout: Layout, rate: float) -> dict[str, float]:
    """Busy share of each resource at ``rate``: replicas and cards as averages over their kind."""
    busy = {}
    for deployment in sorted({r.deployment for r in layout.replicas}):
        if workload.work_s(deployment) > 0:
            busy[DEPLOYMENT_ROLE.get(deployment, deployment)] = rate * workload.work_s(deployment) / layout.count(deployment)
    gpu_work = sum(workload.work_s(d) for d in {r.deployment for r in layout.replicas if r.card is not None})
    if layout.gpus:
        busy[CARDS] = rate * gpu_work / layout.gpus
    for name, (seconds, available) in shared_resources(workload, layout).items():
        busy[name] = rate * seconds / available
    return busy


def rate_at(workload: Workload, capacity: Capacity, clients: int) -> float:
    """Assets/s that ``clients`` closed-loop clients get: one each per sequential latency, at most the capacity."""
    return min(capacity.assets_per_s, clients / workload.sequential_s())


def p50_at(workload: Workload, capacity: Capacity, clients: int) -> float:
    """Latency with ``clients`` closed-loop clients: sequential, or the queue that Little's law gives."""
    return max(workload.sequential_s(), clients / capacity.assets_per_s)


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
    return replace(base, seconds=seconds)


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
    print(markdown(rows, measured))
    if args.json is not None:
        args.json.write_text(json.dumps({"workload": workload.__dict__, "predictions": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
