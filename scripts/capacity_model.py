"""The capacity model of the served graph: the linear program behind ``scripts/capacity.py``.

Every request visits each stage once (FLUX only for the text-prompt share). A replica runs one call
at a time. Replicas whose GPU shares sit on one card time-slice it, so a card does at most one
second of stage work per second. Ray Serve's router hands work to whichever replica frees up
first, which under load comes close to the best split of work over replicas. The best split is a
linear program: maximise the rate X such that the replicas of each deployment share X, and every
replica, card, the CPU cores, the ingress and the HTTP proxy do at most one second of work per
second (the cores: as many seconds as there are cores). The constraint with the largest dual value
names the bottleneck. Latency: the sequential p50 is the sum of the stage seconds plus the graph's
own overhead; C clients in a closed loop wait at least C / X (Little's law).

A card is charged each stage's wall seconds unless told its busy seconds: wall time holds CPU work
(crops, the unwrap's packing) and, with time-slicing, other processes' slices, so it errs low;
under MPS the stages' kernels overlap, and the card's limit is their busy time. A batching stage's
replica is charged its share of a batched call.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

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
        batched: per stage call, (requests per call, seconds per call) under load: the replica's
            throughput; ``seconds`` stays the latency of a request alone.
        card_seconds: per stage call, GPU busy seconds per request on its card (a timeline's
            kernel time); calls left out charge the card their wall seconds per request.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict(MEASURED_SECONDS))
    overhead_s: float = MEASURED_OVERHEAD_S
    prompt_share: float = 1.0
    asset_mb: float = MEASURED_ASSET_MB
    ingress_cpu_s: float = MEASURED_INGRESS_CPU_S
    proxy_cpu_s: float = MEASURED_PROXY_CPU_S
    proxy_cpu_s_per_mb: float = MEASURED_PROXY_CPU_S_PER_MB
    batched: dict[str, tuple[int, float]] = field(default_factory=dict)
    card_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, calls in (("seconds", self.seconds), ("batched", self.batched), ("card_seconds", self.card_seconds)):
            unknown = set(calls) - set(CALL_DEPLOYMENT)
            if unknown:
                raise ValueError(f"{name}: unknown stage calls {sorted(unknown)}; expected some of {list(CALL_DEPLOYMENT)}")
        if any(value < 0 for value in (*self.seconds.values(), *self.card_seconds.values())):
            raise ValueError(f"seconds: every stage time must be >= 0, got {self.seconds} and {self.card_seconds}")
        if any(size < 1 or seconds <= 0 for size, seconds in self.batched.values()):
            raise ValueError(f"batched: expected SIZE >= 1 and SECONDS > 0 per call, got {self.batched}")
        if not 0.0 <= self.prompt_share <= 1.0:
            raise ValueError(f"prompt_share: expected 0..1, got {self.prompt_share}")

    def visits(self, call: str) -> float:
        """Calls of ``call`` per request on average."""
        return self.prompt_share if call == "text_to_image" else 1.0

    def item_s(self, call: str) -> float:
        """A replica's seconds per request of ``call`` under load: its batched share, else its time alone."""
        if call in self.batched:
            size, seconds = self.batched[call]
            return seconds / size
        return self.seconds[call]

    def work_s(self, deployment: str) -> float:
        """Seconds of replica work one request brings a deployment (all of its calls)."""
        return sum(self.item_s(c) * self.visits(c) for c in self.seconds if CALL_DEPLOYMENT[c] == deployment)

    def card_work_s(self, deployment: str) -> float:
        """Seconds of card time one request brings a GPU deployment: busy seconds where known, else its work."""
        calls = [c for c in self.seconds if CALL_DEPLOYMENT[c] == deployment]
        return sum(self.card_seconds.get(c, self.item_s(c)) * self.visits(c) for c in calls)

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
            if replica.card == card and workload.work_s(replica.deployment) > 0:
                # x counts the replica's requests: its card time per request, not its wall time.
                row[index] = workload.card_work_s(replica.deployment)
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
    gpu_work = sum(workload.card_work_s(d) for d in {r.deployment for r in layout.replicas if r.card is not None})
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
