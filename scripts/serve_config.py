"""Serve configs for N GPUs of one node: ``python -m scripts.serve_config --gpus 2``.

Writes ``configs/serve_gpus_<N>.yaml`` (or ``--out``; ``--out -`` prints it): the production
preset with one FLUX replica per card, TripoSR beside them, CPU stages sized from the cores and an
autoscaling range for every stage, the placement explained in the file's comments. Replica counts
come from the stage seconds (BENCHMARKS.md, or ``--bench``/``--seconds`` as for
``scripts/capacity.py``) and the capacity model's prediction is written into the header.
Which stages use the GPU, and their memory caps, come from the preset (``gpu_memory_gib``).
"""

import argparse
import itertools
import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gen3d.config import load_preset
from gen3d.devices import CAPPED_ALLOCATOR_ENV
from gen3d.service.api import ServiceConfig
from gen3d.service.job_store import BackendConfig, JobStoreConfig
from gen3d.service.mps import MPS_MODES
from gen3d.service.preflight import BUILDER
from scripts.capacity import (
    CALL_DEPLOYMENT,
    ROOT,
    Workload,
    add_workload_args,
    layout_from_config,
    solve,
    workload_from_args,
)

#: FLUX's share: over half a card, so two never share one, whatever order replicas start in.
FLUX_SHARE = 0.6
#: What each GPU stage beside FLUX may hold per card (the 0.4 left is split between them).
SIDE_SLOTS = {"ImageTo3DDeployment": 2, "BackgroundDeployment": 1}
#: GiB per process outside the allocator's cap (CUDA context, cuBLAS workspace): on one H100 the
#: FLUX process took 18.2 GiB under its 18 GiB cap and TripoSR 2.5 GiB under 3 (BENCHMARKS.md).
CONTEXT_GIB = 0.5
#: A CPU-stage replica is sized to be at most this busy at the full GPU rate, so queues stay short.
CPU_BUSY = 0.5
#: Cores left to Ray itself (raylet, GCS, controller, proxy).
SYSTEM_CPUS = 2.0
#: Cores a CPU replica holds: background runs onnxruntime with this many threads.
CPU_STAGE_CPUS = {"BackgroundDeployment": 2.0, "ExportDeployment": 1.0}
#: Autoscaling delays and target: (upscale_delay_s, downscale_delay_s), from how fast each starts.
DELAYS_S = {
    # The slowest start (25-28 s from precompiled artifacts, 47-71 s compiling, plus 33 GB of weights
    # on first load): add early, drop only after long idleness.
    "TextToImageDeployment": (30.0, 1800.0),
    # Loads 1.7 GB of weights, no compile.
    "ImageTo3DDeployment": (10.0, 300.0),
    "BackgroundDeployment": (5.0, 120.0),
    "ExportDeployment": (5.0, 120.0),
}
#: Ongoing requests per replica to aim for: one running, one waiting (each runs one at a time).
TARGET_ONGOING = 2
PRESET = "fast"


@dataclass(frozen=True)
class Stage:
    """One stage deployment as the generated config sets it.

    Attributes:
        name: deployment name.
        num_gpus, num_cpus: its ``ray_actor_options``.
        min_replicas, max_replicas: its autoscaling range.
        note: comment lines written above it.
    """

    name: str
    num_gpus: float
    num_cpus: float
    min_replicas: int
    max_replicas: int
    note: list[str] = field(default_factory=list)


def gpu_caps(preset_name: str) -> dict[str, float]:
    """GPU memory cap (GiB) of each deployment whose stage the preset puts on CUDA.

    Raises:
        ValueError: a CUDA stage has no ``gpu_memory_gib``, so no card can be sized for it.
    """
    caps = {}
    for stage, cfg in load_preset(preset_name):
        if cfg.device.startswith("cuda"):
            if cfg.gpu_memory_gib is None:
                raise ValueError(f"preset {preset_name}: {stage} runs on CUDA without gpu_memory_gib; set one to size the cards")
            caps[CALL_DEPLOYMENT[stage]] = cfg.gpu_memory_gib
    return caps


def side_shares(slots: dict[str, int], caps: dict[str, float]) -> dict[str, float]:
    """``num_gpus`` of each GPU stage beside FLUX: the card's remaining 0.4, split over the slots
    in proportion to each stage's memory (cap plus context), so that any mix of them Ray admits
    holds as much memory as the slots do."""
    per_gib = (1.0 - FLUX_SHARE) / sum(count * (caps[name] + CONTEXT_GIB) for name, count in slots.items())
    return {name: math.floor((caps[name] + CONTEXT_GIB) * per_gib * 1e4) / 1e4 for name in slots}  # Ray: 1e-4 units


def fit_slots(caps: dict[str, float], card_gib: float) -> dict[str, int]:
    """Slots per card of each GPU stage beside FLUX: ``SIDE_SLOTS``, fewer where the card's memory needs it.

    Raises:
        ValueError: even one slot each does not fit ``card_gib``.
    """
    slots = {name: count for name, count in SIDE_SLOTS.items() if name in caps}
    while worst_card_gib(side_shares(slots, caps), caps) > card_gib:
        widest = max(slots, key=slots.get)
        if slots[widest] == 1:
            raise ValueError(f"--card-gib: one FLUX and one of each other GPU stage (caps {caps} + context) need more than {card_gib:g} GiB")
        slots[widest] -= 1
    return slots


def worst_card_gib(side: dict[str, float], caps: dict[str, float]) -> float:
    """The most memory any mix of replicas that Ray admits on one card can take (caps + contexts).

    Args:
        side: ``num_gpus`` of the GPU stages beside FLUX.
        caps: GPU memory cap of every GPU stage, FLUX's included.
    """
    shares = {"TextToImageDeployment": FLUX_SHARE, **side}
    names = list(shares)
    most = 0.0
    limits = [range(int(1.0 / shares[n] + 1e-9) + 1) for n in names]
    for counts in itertools.product(*limits):
        if sum(c * shares[n] for c, n in zip(counts, names, strict=True)) <= 1.0 + 1e-9:
            most = max(most, sum(c * (caps[n] + CONTEXT_GIB) for c, n in zip(counts, names, strict=True)))
    return most


def autoscaling(name: str, low: int, high: int) -> dict[str, Any]:
    up, down = DELAYS_S[name]
    return {
        "min_replicas": low,
        "max_replicas": high,
        "target_ongoing_requests": TARGET_ONGOING,
        "upscale_delay_s": up,
        "downscale_delay_s": down,
    }


def gpu_stages(gpus: int, caps: dict[str, float], slots: dict[str, int], workload: Workload, min_flux: int) -> list[Stage]:
    """FLUX, one per card, and the GPU stages beside it (``slots`` per card), with their autoscaling ranges."""
    rate = gpus / sum(workload.work_s(name) for name in caps)
    flux_note = [
        f"FLUX: one replica per card (num_gpus {FLUX_SHARE} > 0.5), capped at {caps['TextToImageDeployment']:g} GiB by "
        f"the preset. Keeps {min_flux} when idle: a replica takes the longest to start (weights, compile, CUDA graphs)."
    ]
    stages = [Stage("TextToImageDeployment", FLUX_SHARE, 1.0, min_flux, gpus, flux_note)]
    for name, share in side_shares(slots, caps).items():
        work = workload.work_s(name)
        # Its minimum fits beside one FLUX on one card: no start-up order can keep a FLUX off a card.
        low = max(1, min(slots[name], math.ceil(rate * work / CPU_BUSY)))
        note = [
            f"num_gpus {share}: {slots[name]} beside each FLUX, capped at {caps[name]:g} GiB. {work:.3f} s a request: "
            f"{low} at least ({rate * work / low:.0%} busy each at {rate:.1f} assets/s), {slots[name]} per card at most."
        ]
        stages.append(Stage(name, share, 1.0, low, slots[name] * gpus, note))
    return stages


def cpu_stages(names: list[str], cpus: float, reserved: float, workload: Workload, rates: tuple[float, float]) -> list[Stage]:
    """CPU stages sized from the rates of text and of image prompts, within the cores left.

    Args:
        names: the stage deployments that run on the CPU (keys of ``CPU_STAGE_CPUS``).
        cpus: the node's cores.
        reserved: cores already held by GPU stages, the ingress and Ray itself.
        workload: the stage seconds.
        rates: assets/s at the full GPU rate for text prompts and for image prompts (no FLUX).

    Raises:
        ValueError: the cores cannot hold even the minimum replicas.
    """
    text_rate, image_rate = rates
    wanted = {}
    for name in names:
        per_replica, work = CPU_STAGE_CPUS[name], workload.work_s(name)
        low = max(1, math.ceil(text_rate * work / CPU_BUSY))
        wanted[name] = (per_replica, work, low, max(low, math.ceil(image_rate * work / CPU_BUSY)))
    left = cpus - reserved
    need_low = sum(c * low for c, _, low, _ in wanted.values())
    need_high = sum(c * high for c, _, _, high in wanted.values())
    if need_low > left:
        raise ValueError(f"--cpus-per-gpu: {cpus:g} cores leave {left:g} for CPU stages, which need {need_low:g}")
    scale = min(1.0, left / need_high)
    stages = []
    for name, (per_replica, work, low, high) in wanted.items():
        high = max(low, math.floor(high * scale))
        note = [
            f"CPU, {per_replica:g} core(s) each, {work:.3f} s a request: {low} keep each at most {CPU_BUSY:.0%} busy "
            f"at {text_rate:.1f} assets/s; up to {high} for image prompts ({image_rate:.1f}/s) within {left:g} free cores."
        ]
        stages.append(Stage(name, 0.0, per_replica, low, high, note))
    return stages


def ingress_replicas(gpus: int, clients_per_gpu: int) -> int:
    """Enough ingress replicas to admit ``clients_per_gpu`` requests per card (each admits max_in_flight)."""
    return max(1, math.ceil(gpus * clients_per_gpu / ServiceConfig().max_in_flight))


def stage_deployment(stage: Stage) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": stage.num_cpus, "num_gpus": stage.num_gpus}
    if stage.name == "TextToImageDeployment":
        options["runtime_env"] = {"env_vars": dict(CAPPED_ALLOCATOR_ENV)}
    return {
        "name": stage.name,
        "autoscaling_config": autoscaling(stage.name, stage.min_replicas, stage.max_replicas),
        "ray_actor_options": options,
    }


def build(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    """The config, a comment per deployment, and the header's facts."""
    workload = workload_from_args(args)
    gpus, cpus = args.gpus, args.cpus_per_gpu * args.gpus
    caps = gpu_caps(args.preset)
    slots = fit_slots(caps, args.card_gib)
    gpu = gpu_stages(gpus, caps, slots, workload, args.min_flux or gpus)
    ingress = ingress_replicas(gpus, args.clients_per_gpu)
    side_work = sum(workload.work_s(name) for name in caps if name != "TextToImageDeployment")
    text_rate = gpus / sum(workload.work_s(name) for name in caps)
    image_rate = gpus / side_work if side_work > 0 else text_rate
    reserved = sum(s.num_cpus * s.max_replicas for s in gpu) + ingress + SYSTEM_CPUS
    on_cpu = [name for name in CPU_STAGE_CPUS if name not in caps]
    stages = gpu + cpu_stages(on_cpu, cpus, reserved, workload, (text_rate, image_rate))
    service = ServiceConfig()
    backend = BackendConfig(backend="redis", url=args.redis_url) if args.redis_url else BackendConfig()
    store = JobStoreConfig(job_store=backend)
    ingress_user = {"api_key": service.api_key, "request_timeout_s": service.request_timeout_s, "max_in_flight": service.max_in_flight}
    app_args: dict[str, Any] = {"preset": args.preset}
    if args.mps != "off":  # MPS lets the stages beside FLUX run at once on its card (gen3d.service.mps)
        app_args["mps"] = args.mps
    if "BackgroundDeployment" not in caps:  # onnxruntime's threads match the cores the replica holds
        app_args["overrides"] = {"background": {"threads": int(CPU_STAGE_CPUS["BackgroundDeployment"])}}
    deployments = [
        {"name": "Ingress", "num_replicas": ingress, "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0}, "user_config": ingress_user},
        {"name": "SharedState", "user_config": store.model_dump(exclude_none=True)},
        *(stage_deployment(s) for s in sorted(stages, key=lambda s: list(CALL_DEPLOYMENT.values()).index(s.name))),
    ]
    config = {
        "proxy_location": args.proxy_location,
        "http_options": {"host": args.host, "port": args.port, "request_timeout_s": 120},
        "applications": [{"name": "gen3d", "route_prefix": "/", "import_path": BUILDER, "args": app_args, "deployments": deployments}],
    }
    notes = {s.name: s.note for s in stages}
    notes["Ingress"] = [f"Each admits max_in_flight {service.max_in_flight} requests: {ingress} for {args.clients_per_gpu} clients per card."]
    notes["SharedState"] = [
        f"Jobs in the Redis at {args.redis_url}, which every node reaches (README, Jobs)." if args.redis_url
        else "Jobs in SQLite files on this replica's node (~/.cache/gen3d/jobs); several nodes: --redis-url (README, Jobs)."
    ]
    worst = worst_card_gib(side_shares(slots, caps), caps)
    facts = {"workload": workload, "cpus": cpus, "caps": caps, "slots": slots, "worst_gib": worst, "stages": stages}
    return config, notes, header(args, config, facts)


def prediction(config: dict[str, Any], gpus: int, cpus: float, workload: Workload, counts: str) -> str:
    capacity = solve(workload, layout_from_config(config, gpus, cpus, counts))
    return f"{capacity.assets_per_s:.1f} assets/s at {counts} replicas ({capacity.bottleneck})"


def header(args: argparse.Namespace, config: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """The file's opening comment, one paragraph an item: how it was made, placement, redeploys, prediction."""
    workload: Workload = facts["workload"]
    flux_cap = facts["caps"]["TextToImageDeployment"]
    shares = side_shares(facts["slots"], facts["caps"])
    beside = " and ".join(f"up to {count} {name} (num_gpus {shares[name]})" for name, count in facts["slots"].items())
    calls = ", ".join(f"{call} {seconds:.3f}" for call, seconds in workload.seconds.items())
    return [
        f"Production graph on {args.gpus} GPU(s): serve run {args.out_name} (one node) or serve deploy (a cluster)",
        f"GENERATED by `{args.command}`: change the generator or its flags, not this file "
        "(tests/scripts/test_serve_config.py checks that they agree). Model settings: configs/<preset>.yaml.",
        f"Sized for {args.card_gib:g} GB cards (H100/H200) and {facts['cpus']:g} cores from these stage seconds per "
        f"request (BENCHMARKS.md unless given): {calls}. A vertex-colour GLB makes no remesh or bake call.",
        "",
        "Placement: Ray gives a fractional num_gpus the first card with room.",
        f"- FLUX (num_gpus {FLUX_SHARE}): two never fit on one card, so each card holds exactly one.",
        f"- Beside each FLUX: {beside}, {1 - FLUX_SHARE:g} together, split in proportion to memory so that any "
        "mix of them Ray admits fits. Their minimums together fit beside one FLUX, so no start-up order can keep a "
        "FLUX off a card; replicas the autoscaler adds go to the next card with room. A FLUX that shares its card "
        "with busy replicas does less FLUX work: the router sends more to the others, which free up sooner.",
        f"- The worst mix Ray admits on one card takes {facts['worst_gib']:g} GiB: the preset's caps ({flux_cap:g} GiB "
        f"FLUX, {side_caps(facts['caps'])}) plus {CONTEXT_GIB:g} GiB of CUDA context per process.",
        "Redeploys (Ray 2.60, max_surge_percent 0): Serve stops old replicas, 20 % of a deployment at a time, and "
        "asks for their replacements at once. A FLUX replacement gets a card only when the old replica has drained "
        "(graceful_shutdown_timeout_s) and exited, then loads and compiles: a FLUX update rolls through the cards "
        "one at a time. Keep max_surge_percent 0 for FLUX: a surge replica needs a free card.",
        f"Autoscaling: target_ongoing_requests {TARGET_ONGOING} (one call running, one waiting); the delays follow "
        "start-up times: FLUX tens of seconds plus its weights, TripoSR seconds plus its weights, CPU stages seconds.",
        f"Prediction (scripts/capacity.py, text prompts): {prediction(config, args.gpus, facts['cpus'], workload, 'max')}; "
        f"{prediction(config, args.gpus, facts['cpus'], workload, 'min')}.",
    ]


def side_caps(caps: dict[str, float]) -> str:
    return ", ".join(f"{caps[name]:g} GiB {name}" for name in SIDE_SLOTS if name in caps)


def wrapped(paragraph: str, width: int) -> list[str]:
    """A comment paragraph in lines of at most ``width`` characters; bullets keep their indent."""
    indent = "  " if paragraph.startswith("- ") else ""
    return textwrap.wrap(paragraph, width=width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def render(config: dict[str, Any], notes: dict[str, list[str]], lines: list[str]) -> str:
    """YAML of ``config`` with ``lines`` as its opening comment and each deployment's note above it."""
    app = dict(config["applications"][0])
    deployments = app.pop("deployments")
    out = [f"# {line}".rstrip() for paragraph in lines for line in wrapped(paragraph, 98)]
    out.append(yaml.safe_dump({**config, "applications": [app]}, sort_keys=False, width=120).rstrip("\n"))
    out.append("  deployments:")
    for deployment in deployments:
        out += [f"  # {line}" for note in notes.get(deployment["name"], []) for line in wrapped(note, 96)]
        item = yaml.safe_dump([deployment], sort_keys=False, width=120).rstrip("\n")
        out += [f"  {line}" for line in item.splitlines()]
    return "\n".join(out) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="cards on the node")
    parser.add_argument("--out", help="file to write (default configs/serve_gpus_<N>.yaml; - prints)")
    parser.add_argument("--preset", default=PRESET, help="model preset (its CUDA stages and memory caps)")
    parser.add_argument("--card-gib", type=float, default=80.0, help="memory of one card")
    parser.add_argument("--min-flux", type=int, help="FLUX replicas kept when idle (default: one per card)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 only behind a firewall, with an api_key)")
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--redis-url", help="job store in this Redis (redis://host:6379/0), for several nodes; "
                        "default: SQLite files on the store replica's node")  # fmt: skip
    parser.add_argument("--proxy-location", choices=("HeadOnly", "EveryNode"), default="HeadOnly",
                        help="EveryNode on a cluster behind a load balancer")  # fmt: skip
    parser.add_argument("--mps", choices=MPS_MODES, default="auto",
                        help="CUDA MPS for each card's stage processes when started by gen3d serve (off on KubeRay)")  # fmt: skip
    add_workload_args(parser)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be >= 1, got {args.gpus}")
    if args.min_flux is not None and not 1 <= args.min_flux <= args.gpus:
        parser.error(f"--min-flux must be 1..{args.gpus}, got {args.min_flux}")
    args.out_name = args.out if args.out not in (None, "-") else f"configs/serve_gpus_{args.gpus}.yaml"
    shown = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out") and not a.startswith("--out=")]
    args.command = " ".join(["python -m scripts.serve_config", *shown])
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        config, notes, lines = build(args)
    except ValueError as err:
        print(f"serve_config: {err}", file=sys.stderr)
        return 2
    text = render(config, notes, lines)
    if args.out == "-":
        print(text, end="")
        return 0
    path = Path(args.out) if args.out else ROOT / args.out_name
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
