"""The GPU protocol of issue 21 (one card near its limit), one part per command of at most 9 minutes.

    bash scripts/gpu_card_limit.sh OUT 1     # part 1
    bash scripts/gpu_card_limit.sh OUT 2     # part 2: same OUT, same machine if it is still warm
    python -m scripts.card_limit OUT --dry-run   # the logic on the tiny CPU graph (a few minutes)

Part 1: the machine; FLUX precompiled at every batch size into a /tmp cache; the full-size FLUX
check (batched images against alone, seconds per batch size: about 70 s, before the graph when
the graph still fits after it, else after it if time is left); the graph as it was (MPS off, no
batching): text -> the default UV GLB at 1, 8 and 16 clients x 32 requests, and the GPU timeline
(one request at a time, then 8 clients); the attention backends if time is left.

Part 2: the precompile again (at once when part 1's cache is there, a cold compile on a fresh
machine); the FLUX check if part 1 had no time for it; MPS on with batching (the service now):
the sweep, the timeline, and a fatal GPU fault injected under load (what the clients got, when
the graph answered again); then, while time lasts, the 1/3-SM proxy of the user's card (MPS
active threads 33 %, the 24 GB caps: a proxy, not a 4090 figure), MPS on without batching (MPS's
own share of the gain), the attention backends and client priorities (FLUX above the stages
beside it). Part 3 (optional) runs what is still missing. Part 4 stands alone: MPS off, then MPS
on, both unbatched (the presets' FLUX), back to back for a same-machine ratio; then the proxy and
the priorities while time lasts.

``CARD_LIMIT_FAULT=0`` leaves the fault test out. Every step names the seconds it needs; one that
would not end before the budget does is skipped and says so. Each graph is stopped before the
next starts (its MPS daemon too), and the Ray cluster is stopped at the end of every graph on the
GPU box. Results accumulate in OUT/results.json; OUT/summary.md renders them all
(scripts/card_limit_report.py).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen3d.devices import CAPPED_ALLOCATOR_ENV
from scripts import gpu_timeline
from scripts.card_limit_report import write_summary
from scripts.served_graph import (
    GraphFailed,
    GraphPlan,
    MemorySampler,
    Served,
    TraceWindows,
    drive,
    fault_under_load,
    gpu_replicas,
    sweep_summary,
)

ROOT = Path(__file__).resolve().parent.parent
#: Compile cache, traces and the state between parts on the GPU box (a dry run keeps them in OUT).
SCRATCH = Path("/tmp/gen3d_card_limit")
#: Seconds kept for stopping a graph (drain, Serve, Ray, MPS) after its last measurement.
STOP_RESERVE_S = 60.0
#: FLUX batch sizes tried, largest first, until one precompiles within the memory cap.
BATCH_SIZES = (4, 2)
GPU_STAGES = ("TextToImageDeployment", "BackgroundDeployment", "ImageTo3DDeployment")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement sends (the GPU protocol's, or the dry run's few requests)."""

    ready_s: float = 300.0
    sweep_n: int = 32
    sweep: str = "1,8,16"
    clients: int = 8
    warmup: int = 4
    alone_n: int = 8
    load_n: int = 32
    bench_timeout_s: float = 180.0
    fault_s: float = 150.0


DRY_SIZES = Sizes(ready_s=400.0, sweep_n=4, sweep="1,2", clients=2, warmup=1, alone_n=2, load_n=4, bench_timeout_s=240.0, fault_s=60.0)


@dataclass
class Context:
    """One part's run: where results go, the budget, and what earlier parts found."""

    out: Path
    deadline: float
    dry_run: bool
    base_config: Path
    port: int
    sizes: Sizes
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def scratch(self) -> Path:
        return self.out / "scratch" if self.dry_run else SCRATCH

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - self.started:.0f} s, {self.left():.0f} s left] {message}", flush=True)

    def save(self) -> None:
        """results.json and summary.md in OUT, and (on the GPU box) the state the next part starts from."""
        text = json.dumps(self.results, indent=2, default=str)
        (self.out / "results.json").write_text(text)
        write_summary(self.results, self.out / "summary.md")
        if not self.dry_run:
            self.scratch.mkdir(parents=True, exist_ok=True)
            (self.scratch / "results.json").write_text(text)

    def batch_size(self) -> int:
        return int(self.results.get("max_batch_size", BATCH_SIZES[0]))

    def flux(self, batch: int) -> dict[str, Any]:
        """FLUX overrides of a graph or precompile: the batch size and (GPU) the scratch compile cache."""
        overrides: dict[str, Any] = {"max_batch_size": batch}
        if not self.dry_run:
            overrides["compile_cache_dir"] = str(self.scratch / "compile")
        return overrides


def run_command(command: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> int:
    """Run ``command`` with its output in ``log``; its exit code, or 124 after ``timeout_s``."""
    with log.open("w") as out:
        try:
            return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=max(timeout_s, 1.0),
                                  env={**os.environ, **(env or {})}, check=False).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return 124


# -- steps ---------------------------------------------------------------------------------------


def environment(ctx: Context) -> dict[str, Any]:
    """The card, driver, compute and MIG modes, the software, the cores and the MPS binary."""
    import importlib.metadata

    found: dict[str, Any] = {"cpus": os.cpu_count(), "mps_binary": shutil.which("nvidia-cuda-mps-control")}
    for name in ("torch", "triton", "diffusers", "torchao", "ray"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        query = "name,driver_version,memory.total,compute_mode,mig.mode.current"
        done = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=False)
        found["gpus"] = done.stdout.strip().splitlines()
    return found


def precompile(ctx: Context) -> dict[str, Any]:
    """Compile FLUX at every batch size into the scratch cache; a smaller batch if the largest fails."""
    attempts = []
    for batch in (ctx.batch_size(), *[b for b in BATCH_SIZES if b < ctx.batch_size()]):
        served = Served(GraphPlan("precompile", ctx.base_config, ctx.port, text_to_image=ctx.flux(batch)), ctx.out / "precompile", ctx.scratch / "unused")
        command = [sys.executable, "-m", "gen3d.service.precompile", "--serve-config", str(served.config_path)]
        start = time.monotonic()
        code = run_command(command, ctx.out / "precompile" / f"batch{batch}.log", ctx.left() - 30, dict(CAPPED_ALLOCATOR_ENV))
        attempts.append({"max_batch_size": batch, "exit": code, "seconds": time.monotonic() - start})
        if code == 0:
            ctx.results["max_batch_size"] = batch
            return {"attempts": attempts, "max_batch_size": batch}
        ctx.log(f"precompile at batch {batch} failed (exit {code}); see precompile/batch{batch}.log")
    raise RuntimeError(f"precompile failed at every batch size: {attempts}")


def timeline(ctx: Context, served: Served) -> dict[str, Any]:
    """A window of single requests, then one of ``clients`` clients; the merged timeline of both."""
    windows = TraceWindows(served.traces)
    expected = gpu_replicas(served.config)
    body = {"format": "glb"}
    runs = {}
    for label, n, clients in (("alone", ctx.sizes.alone_n, 1), (f"load{ctx.sizes.clients}", ctx.sizes.load_n, ctx.sizes.clients)):
        windows.open(label)
        run = drive(served.url, n, clients, body, label)
        windows.close()
        drive(served.url, 2 * max(expected, 1), max(expected, 1), body, "flush")  # their next calls close the windows
        written = windows.wait(label, expected, timeout_s=min(30.0, max(ctx.left() - STOP_RESERVE_S, 1.0)))
        runs[label] = {"assets_per_s": run.assets_per_s, "errors": run.errors, "replicas_written": written, "expected": expected}
    load = served.traces / f"load{ctx.sizes.clients}"
    try:
        report = gpu_timeline.analyse(load, served.traces / "alone")
    except (ValueError, OSError) as err:
        return {"runs": runs, "error": str(err)}
    text = gpu_timeline.markdown(report)
    (served.folder / "timeline.json").write_text(json.dumps(report, indent=2))
    (served.folder / "timeline.md").write_text(text + "\n")
    return {"runs": runs, "card": report["card"], "stages": report["stages"], "slicing": report.get("slicing"), "markdown": text}


def graph(ctx: Context, plan: GraphPlan, measure_timeline: bool, inject_fault: bool, sweep: str | None = None) -> dict[str, Any]:
    """Serve ``plan``; the sweep, then (while time lasts) the timeline and the fault test; stop it."""
    traces = ctx.scratch / "traces" / plan.name
    shutil.rmtree(traces, ignore_errors=True)  # a window label from an earlier run must not count
    served = Served(plan, ctx.out / plan.name, traces)
    sampler = MemorySampler(served.folder / "gpu_used_mib.txt")
    found: dict[str, Any] = {"mps_mode": plan.mps, "text_to_image": plan.text_to_image, "env": plan.env}
    try:
        found["ready_s"] = served.start(min(ctx.sizes.ready_s, ctx.left() - STOP_RESERVE_S - 60), trace=measure_timeline)
        ctx.log(f"{plan.name}: ready in {found['ready_s']:.0f} s")
        found["mps"] = served.mps_clients()
        sampler.start()
        bench = [sys.executable, "-m", "scripts.bench", "--url", served.url, "-n", str(ctx.sizes.sweep_n), "--format", "glb",
                 "--concurrency", str(ctx.sizes.clients), "--sweep", sweep or ctx.sizes.sweep, "--warmup", str(ctx.sizes.warmup),
                 "--out", str(served.folder / "bench")]  # fmt: skip
        code = run_command(bench, served.folder / "bench.log", min(ctx.sizes.bench_timeout_s, ctx.left() - STOP_RESERVE_S))
        found["sweep"] = sweep_summary(served.folder / "bench" / "bench.json") if code == 0 else {"error": f"bench exit {code}"}
        ctx.log(f"{plan.name}: sweep {found['sweep'].get('assets_per_s', found['sweep'])}")
        if measure_timeline and ctx.left() > STOP_RESERVE_S + 60:
            found["timeline"] = timeline(ctx, served)
            ctx.log(f"{plan.name}: timeline {found['timeline'].get('card', found['timeline'].get('error'))}")
        if inject_fault and os.environ.get("CARD_LIMIT_FAULT", "1") == "1" and ctx.left() > STOP_RESERVE_S + 60:
            limit = min(ctx.sizes.fault_s, ctx.left() - STOP_RESERVE_S - 40)
            found["fault"] = fault_under_load(served, ctx.sizes.clients, limit)
            ctx.log(f"{plan.name}: fault {found['fault']}")
    except GraphFailed as err:
        found["error"] = str(err)
    finally:
        found["peak_mib"] = sampler.stop()
        found["stop"] = served.stop(stop_ray=not ctx.dry_run)
    return found


def flux_check(ctx: Context, name: str, largest_batch: int, backends: list[str], limit_s: float) -> dict[str, Any]:
    """scripts/flux_check.py at full size in its own process (no graph is up): batches 1 to ``largest_batch``,
    stopped after ``limit_s`` seconds."""
    folder = ctx.out / name
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [str(b) for b in range(1, largest_batch + 1)]
    command = [sys.executable, "-m", "scripts.flux_check", "--out", str(folder), "--batch-sizes", *sizes,
               "--set", f"compile_cache_dir={ctx.scratch / 'compile'}", "--budget-s", str(limit_s - 10), "--backends", *backends]  # fmt: skip
    code = run_command(command, folder / "flux_check.log", min(limit_s, ctx.left() - 10), dict(CAPPED_ALLOCATOR_ENV))
    if code != 0:
        raise RuntimeError(f"flux_check exit {code}; see {name}/flux_check.log")
    return {**json.loads((folder / "flux_check.json").read_text()), "markdown": (folder / "flux_check.md").read_text()}


# -- parts ---------------------------------------------------------------------------------------


def plan(ctx: Context, name: str, mps: str, batch: int, **extra: Any) -> GraphPlan:
    """A graph of the base config on the protocol's port, with ``mps`` and FLUX batches of ``batch``."""
    return GraphPlan(name, ctx.base_config, ctx.port, mps=mps, text_to_image=ctx.flux(batch), **extra)


@dataclass(frozen=True)
class Step:
    """One measurement: its result key, the seconds it needs at least, and what it runs.

    Attributes:
        key: its name in results.json (a step done in an earlier part is not run again, unless ``repeat``).
        needs_s: seconds it needs; with less left it is skipped.
        run: the measurement.
        gpu_only: skipped in a dry run.
        repeat: run in every part that lists it (the precompile: at once when cached).
    """

    key: str
    needs_s: float
    run: Callable[[Context], dict[str, Any]]
    gpu_only: bool = False
    repeat: bool = False


def mps_off(ctx: Context) -> dict[str, Any]:
    """The graph as it was: MPS off, no batching; sweep and timeline."""
    return graph(ctx, plan(ctx, "mps-off", "off", 1), measure_timeline=True, inject_fault=False)


def mps_batch(ctx: Context) -> dict[str, Any]:
    """MPS on and FLUX batching (the service now): sweep, timeline, then a fatal fault under load."""
    return graph(ctx, plan(ctx, "mps-batch", "auto", ctx.batch_size()), measure_timeline=True, inject_fault=True)


def mps_only(ctx: Context) -> dict[str, Any]:
    """MPS on without batching: the sweep (MPS's own share of the gain)."""
    return graph(ctx, plan(ctx, "mps-only", "auto", 1), measure_timeline=False, inject_fault=False)


def proxy_third(ctx: Context) -> dict[str, Any]:
    """The user's-card proxy: every GPU stage limited to a third of the SMs (MPS active threads), 24 GB caps."""
    env = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "33"}
    return graph(ctx, plan(ctx, "proxy-third", "on", ctx.batch_size(), env=env), False, False, sweep=f"1,{ctx.sizes.clients}")


def priority(ctx: Context) -> dict[str, Any]:
    """FLUX at normal MPS client priority, the stages beside it below normal."""
    below = {name: {"CUDA_MPS_CLIENT_PRIORITY": "1"} for name in GPU_STAGES if name != "TextToImageDeployment"}
    return graph(ctx, plan(ctx, "priority", "on", ctx.batch_size(), deployment_env=below), False, False, sweep=f"1,{ctx.sizes.clients}")


def full_size_check(ctx: Context) -> dict[str, Any]:
    """Batched FLUX images against alone at full size, and seconds per batch size."""
    return flux_check(ctx, "flux_check", ctx.batch_size(), [], limit_s=150)


def kernels(ctx: Context) -> dict[str, Any]:
    """SDPA's cuDNN and flash backends against the default attention: image difference and seconds."""
    return flux_check(ctx, "kernels", 1, ["_native_cudnn", "_native_flash"], limit_s=min(260, ctx.left() - 10))


def part_steps(part: str) -> list[Step]:
    """The steps of one part, in order of importance."""
    first = [Step("environment", 5, environment, repeat=True), Step("precompile", 60, precompile, repeat=True)]
    # The FLUX check (about 70 s) goes first when the part's graph still fits after it, else after the graph.
    check_first = Step("flux_check", 70 + 260, full_size_check, gpu_only=True)
    check = Step("flux_check", 100, full_size_check, gpu_only=True)
    extras = [Step("kernels", 200, kernels, gpu_only=True), Step("proxy-third", 200, proxy_third), Step("priority", 200, priority)]
    only = Step("mps-only", 200, mps_only)
    later = {
        "1": [check_first, Step("mps-off", 240, mps_off), check, extras[0]],
        "2": [check_first, Step("mps-batch", 240, mps_batch), check, extras[1], only, extras[0], extras[2]],
        "3": [check, only, *extras],
        # Both graphs without batching, back to back on one machine: MPS's gain as a measured ratio.
        "4": [Step("mps-off", 240, mps_off), only, extras[1], extras[2]],
    }
    return first + later[part]


def run_part(ctx: Context, part: str) -> None:
    """Run a part's steps in order, each only if its time is there; record every outcome."""
    done = ctx.results.setdefault("steps", {})
    for step in part_steps(part):
        key = f"{step.key}@{part}" if step.repeat else step.key
        if not step.repeat and done.get(step.key, {}).get("status") == "done":
            ctx.log(f"{step.key}: done in an earlier part")
            continue
        if step.gpu_only and ctx.dry_run:
            done[key] = {"part": part, "status": "skipped", "reason": "GPU only (dry run)"}
            continue
        if ctx.left() < step.needs_s:
            done[key] = {"part": part, "status": "skipped", "reason": f"needs {step.needs_s:.0f} s, {ctx.left():.0f} s left"}
            ctx.log(f"{step.key}: skipped ({done[key]['reason']})")
            ctx.save()
            continue
        ctx.log(f"{step.key}: start")
        start = time.monotonic()
        try:
            result = step.run(ctx)
            failed = result.get("error") if isinstance(result, dict) else None
            done[key] = {"part": part, "status": "failed" if failed else "done", "seconds": time.monotonic() - start, "result": result}
        except Exception as err:  # noqa: BLE001  # one failed measurement must not cost the others
            done[key] = {"part": part, "status": "failed", "seconds": time.monotonic() - start, "reason": f"{type(err).__name__}: {err}"}
        ctx.log(f"{step.key}: {done[key]['status']} in {done[key]['seconds']:.0f} s")
        ctx.save()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="results folder (shared by the parts)")
    parser.add_argument("--part", choices=("1", "2", "3", "4"), default="1")
    parser.add_argument("--budget-s", type=float, default=490.0, help="seconds this part may take, stops included")
    parser.add_argument("--dry-run", action="store_true", help="the tiny CPU graph, few requests, GPU-only steps skipped")
    parser.add_argument("--config", type=Path, help="base serve config (default: configs/serve_random.yaml; dry run: serve_tiny)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    default = "configs/serve_tiny.yaml" if args.dry_run else "configs/serve_random.yaml"
    ctx = Context(
        out=args.out,
        deadline=time.monotonic() + args.budget_s,
        dry_run=args.dry_run,
        base_config=args.config or ROOT / default,
        port=free_port() if args.dry_run else 8093,
        sizes=DRY_SIZES if args.dry_run else Sizes(),
    )
    # A part's OUT may start empty (a device run's $OUT): the earlier parts' state then comes from
    # /tmp. Part 1 starts the protocol afresh.
    carried = not args.dry_run and args.part != "1"
    earlier = [args.out / "results.json", *([SCRATCH / "results.json"] if carried else [])]
    found = next((path for path in earlier if path.is_file()), None)
    ctx.results = json.loads(found.read_text()) if found is not None else {}
    ctx.log(f"part {args.part} of the card-limit protocol, budget {args.budget_s:.0f} s, results in {args.out}")
    run_part(ctx, args.part)
    ctx.save()
    ctx.log(f"part {args.part} finished; summary in {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
