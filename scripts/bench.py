"""Benchmark a running gen3d service: per-stage latency and the throughput gained by overlap.

``python scripts/bench.py --url http://127.0.0.1:8093 -n 20 --concurrency 8 --sweep 1,2,4,8,16``

Sends text prompts one at a time (sequential), then from C client threads sharing one queue
(concurrent), then once per extra ``--sweep`` value. ``--body '{"texture": "vertex"}'`` adds
fields to every request; ``--jobs`` submits each as a job (``POST /jobs``) and times it until
its event stream says done, to measure the job path against ``/generate``. Per request it records the client's latency,
the service's own stage seconds (its ``Server-Timing`` header), the file size and the status.
Writes ``bench.json``, ``bench.md`` and ``bench.png`` to ``--out`` (default: $OUT, else ./out).
Failed requests are counted and shown; they never stop the run.
"""

import argparse
import json
import os
import queue
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from gen3d.service.api import OUTPUT_FORMATS, parse_server_timing

DEFAULT_PROMPTS = ("a blue cube", "a wooden chair", "a coffee mug", "a sports car", "a dragon statue")
# (table column, Server-Timing name): the original pipeline's table, fed by the service's timings.
COLUMNS = (
    ("Total", "total"),
    ("FLUX", "text_to_image"),
    ("BG", "background"),
    ("3D", "image_to_3d"),
    ("Remesh", "remesh"),
    ("Bake", "bake"),
    ("Export", "export"),
)
STATS = ("median", "p95", "mean")


@dataclass(frozen=True)
class RequestResult:
    """One measured request.

    Attributes:
        mode: the run it belongs to (``sequential``, ``concurrent`` or ``sweep-<C>``).
        index: position of the request in its run's queue.
        prompt: the text prompt sent.
        status: HTTP status, or 0 when no answer came (connection error, client timeout).
        latency_s: seconds from send to the last body byte, measured by the client.
        stages: the service's ``Server-Timing`` entries in seconds (empty on errors).
        size_bytes: length of the returned file (0 on errors).
        error: short error text, None on success.
    """

    mode: str
    index: int
    prompt: str
    status: int
    latency_s: float
    stages: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass(frozen=True)
class RunResult:
    """One run of N requests at a fixed client concurrency.

    Attributes:
        mode: ``sequential``, ``concurrent`` or ``sweep-<C>``.
        concurrency: client threads sending at once.
        wall_s: seconds from the first send to the last answer.
        requests: the measured requests, in queue order.
    """

    mode: str
    concurrency: int
    wall_s: float
    requests: list[RequestResult]

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.requests)

    @property
    def assets_per_s(self) -> float:
        """Successful assets per wall-clock second (0 when none succeeded)."""
        done = len(self.requests) - self.errors
        return done / self.wall_s if self.wall_s > 0 else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8093", help="service base URL")
    parser.add_argument("--prompts", type=Path, help="text file, one prompt a line (default: five built-in prompts)")
    parser.add_argument("-n", type=int, default=len(DEFAULT_PROMPTS), help="requests per run (prompts cycle)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="glb")
    parser.add_argument("--body", type=json.loads, default={}, help="JSON object of extra request fields")
    parser.add_argument("--jobs", action="store_true", help="submit jobs and time them to done instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads of the concurrent run")
    parser.add_argument("--sweep", default="1,2,4,8,16", help="comma-separated concurrencies for the plot")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured requests sent first")
    parser.add_argument("--api-key", help="value of the X-API-Key header, if the service needs one")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out"))
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error(
            f"-n and --concurrency must be >= 1 and --warmup >= 0, got {args.n}, {args.concurrency}, {args.warmup}"
        )
    try:
        args.sweep = sorted({int(value) for value in args.sweep.split(",") if value.strip()})
    except ValueError:
        parser.error(f"--sweep must be comma-separated integers, got {args.sweep!r}")
    if any(value < 1 for value in args.sweep):
        parser.error(f"--sweep values must be >= 1, got {args.sweep}")
    return args


def load_prompts(path: Path | None, n: int) -> list[str]:
    """The first ``n`` prompts of ``path`` (or the defaults), cycling when there are fewer."""
    prompts = DEFAULT_PROMPTS if path is None else [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not prompts:
        raise ValueError(f"--prompts: expected at least one non-empty line in {path}, got none")
    return [prompts[i % len(prompts)] for i in range(n)]


def send_one(client: httpx.Client, body: dict, mode: str, index: int) -> RequestResult:
    """POST one ``/generate`` request; every failure becomes a result, never an exception."""
    prompt = body["prompt"]
    start = time.perf_counter()
    try:
        response = client.post("/generate", json=body)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
        return RequestResult(mode, index, prompt, 0, time.perf_counter() - start, error=error)
    latency = time.perf_counter() - start
    if response.status_code != 200:
        return RequestResult(mode, index, prompt, response.status_code, latency, error=response.text[:200])
    stages = parse_server_timing(response.headers.get("server-timing", ""))
    return RequestResult(mode, index, prompt, 200, latency, stages, len(response.content))


def job_until_done(client: httpx.Client, body: dict) -> dict:
    """Submit a job and follow its event stream to the end; return its last state."""
    submitted = client.post("/jobs", json=body)
    submitted.raise_for_status()
    state: dict = {}
    with client.stream("GET", f"{submitted.json()['status_url']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data: "):
                state = json.loads(line[6:])
    return state


def send_job(client: httpx.Client, body: dict, mode: str, index: int) -> RequestResult:
    """One job from submit to done (the asset not downloaded); failures become results."""
    start = time.perf_counter()
    try:
        state = job_until_done(client, body)
    except httpx.HTTPError as exc:
        return RequestResult(mode, index, body["prompt"], 0, time.perf_counter() - start, error=str(exc)[:200])
    latency = time.perf_counter() - start
    if state.get("status") != "done":
        return RequestResult(mode, index, body["prompt"], 500, latency, error=str(state.get("error"))[:200])
    stages = {**state["timings"], "total": latency}
    return RequestResult(mode, index, body["prompt"], 200, latency, stages, state["asset"]["bytes"])


def run_requests(
    client: httpx.Client, bodies: list[dict], mode: str, concurrency: int, progress: tqdm, jobs: bool = False
) -> RunResult:
    """Send ``bodies`` from ``concurrency`` threads pulling from one shared queue (as jobs if asked)."""
    send = send_job if jobs else send_one
    pending: queue.SimpleQueue[tuple[int, dict]] = queue.SimpleQueue()
    for item in enumerate(bodies):
        pending.put(item)
    results: list[RequestResult] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                index, body = pending.get_nowait()
            except queue.Empty:
                return
            result = send(client, body, mode, index)
            with lock:
                results.append(result)
            progress.update()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench") as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - start
    return RunResult(mode, concurrency, wall, sorted(results, key=lambda r: r.index))


def summarise(values: list[float]) -> dict[str, float | None]:
    """median / p95 / mean of ``values`` (None each when there are none)."""
    if not values:
        return dict.fromkeys(STATS)
    return {
        "median": statistics.median(values),
        "p95": float(np.percentile(values, 95)),
        "mean": statistics.fmean(values),
    }


def stage_summary(requests: list[RequestResult]) -> dict[str, dict[str, float | None]]:
    """Per stat, per Server-Timing name (plus ``client`` and ``size_bytes``): over the successes."""
    ok = [r for r in requests if r.ok]
    columns = {key: summarise([r.stages[key] for r in ok if key in r.stages]) for _, key in COLUMNS}
    columns["client"] = summarise([r.latency_s for r in ok])
    columns["size_bytes"] = summarise([float(r.size_bytes) for r in ok])
    return {stat: {key: values[stat] for key, values in columns.items()} for stat in STATS}


def format_seconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.3f} s"


def format_size(size: float | None) -> str:
    if size is None:
        return "–"
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def markdown_table(run: RunResult) -> str:
    """The original per-prompt table (service stage timings), then median / p95 / mean rows."""
    header = "| Prompt | " + " | ".join(name for name, _ in COLUMNS) + " | Size |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in run.requests:
        if r.ok:
            cells = [format_seconds(r.stages.get(key)) for _, key in COLUMNS] + [format_size(r.size_bytes)]
        else:
            cells = [f"error {r.status or 'no answer'}"] + ["–"] * len(COLUMNS)
        lines.append(f"| {r.prompt} | " + " | ".join(cells) + " |")
    summary = stage_summary(run.requests)
    for stat in STATS:
        row = summary[stat]
        cells = [format_seconds(row[key]) for _, key in COLUMNS] + [format_size(row["size_bytes"])]
        lines.append(f"| **{stat}** | " + " | ".join(cells) + " |")
    client = summary["median"]["client"]
    lines.append("")
    lines.append(
        f"{len(run.requests)} requests at concurrency {run.concurrency}: {run.errors} errors, "
        f"{run.assets_per_s:.3f} assets/s, client latency median {format_seconds(client)}"
    )
    return "\n".join(lines)


def overlap_gain(sequential: RunResult, concurrent: RunResult) -> float | None:
    """Concurrent over sequential assets/s: what overlapping the stages buys (None if undefined)."""
    return concurrent.assets_per_s / sequential.assets_per_s if sequential.assets_per_s > 0 else None


def throughput_table(sequential: RunResult, concurrent: RunResult, sweep: list[RunResult]) -> str:
    """assets/s per run, then the measured overlap gain."""
    gain = overlap_gain(sequential, concurrent)
    runs = {run.mode: run for run in sorted((sequential, concurrent, *sweep), key=lambda r: r.concurrency)}
    lines = ["| Mode | Concurrency | Assets/s | Errors |", "|---|---|---|---|"]
    for run in runs.values():
        lines.append(f"| {run.mode} | {run.concurrency} | {run.assets_per_s:.3f} | {run.errors}/{len(run.requests)} |")
    lines += ["", f"Overlap gain (concurrent / sequential assets/s): {'–' if gain is None else f'{gain:.2f}x'}"]
    return "\n".join(lines)


def render_markdown(
    args: argparse.Namespace, sequential: RunResult, concurrent: RunResult, sweep: list[RunResult]
) -> str:
    """The whole markdown report: both per-request tables, then throughput."""
    sections = [
        f"# gen3d benchmark: {args.url}, {'jobs' if args.jobs else '/generate'}, format {args.format} "
        f"{json.dumps(args.body) if args.body else ''}, {args.n} requests per run",
        "Stage columns are the service's own `Server-Timing` seconds (FLUX = text_to_image).",
        "## Sequential",
        markdown_table(sequential),
        f"## Concurrent ({concurrent.concurrency} clients)",
        markdown_table(concurrent),
        "## Throughput",
        throughput_table(sequential, concurrent, sweep),
    ]
    return "\n\n".join(sections) + "\n"


def report_json(
    args: argparse.Namespace, sequential: RunResult, concurrent: RunResult, sweep: list[RunResult]
) -> dict:
    """Config, per-run summaries, the sweep, the overlap gain and one row per measured request."""
    runs = {run.mode: run for run in (sequential, concurrent, *sweep)}
    return {
        "config": {
            "url": args.url, "format": args.format, "body": args.body, "jobs": args.jobs, "n": args.n, "seed": args.seed,
            "concurrency": args.concurrency, "sweep": args.sweep, "warmup": args.warmup,
        },
        "runs": {
            mode: {
                "concurrency": run.concurrency, "wall_s": run.wall_s, "assets_per_s": run.assets_per_s,
                "errors": run.errors, "summary": stage_summary(run.requests),
            }
            for mode, run in runs.items()
        },
        "sweep": [{"concurrency": r.concurrency, "assets_per_s": r.assets_per_s, "errors": r.errors} for r in sweep],
        "overlap_gain": overlap_gain(sequential, concurrent),
        "requests": [asdict(r) for run in runs.values() for r in run.requests],
    }


def plot(path: Path, measured: list[RequestResult], sweep: list[RunResult]) -> None:
    """Left: per-stage latency boxes over all successes. Right: assets/s against concurrency."""
    # The figure API with an explicit Agg canvas needs no display and leaves pyplot's state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    ok = [r for r in measured if r.ok]
    boxes = [(name, [r.stages[key] for r in ok if key in r.stages]) for name, key in COLUMNS]
    boxes = [(name, values) for name, values in boxes if values]
    if boxes:
        left.boxplot([values for _, values in boxes])
        left.set_xticks(range(1, len(boxes) + 1), [name for name, _ in boxes])
    left.set(title=f"Service stage latency ({len(ok)} successful requests)", ylabel="seconds")
    right.plot([r.concurrency for r in sweep], [r.assets_per_s for r in sweep], marker="o")
    right.set(title="Throughput vs concurrency", xlabel="client concurrency", ylabel="assets/s")
    right.set_xscale("log", base=2)
    right.set_xticks([r.concurrency for r in sweep], [str(r.concurrency) for r in sweep])
    right.set_ylim(bottom=0)
    fig.savefig(path, dpi=100)


def sweep_runs(
    client: httpx.Client, bodies: list[dict], args: argparse.Namespace,
    sequential: RunResult, concurrent: RunResult, progress: tqdm,
) -> list[RunResult]:
    """One run per ``--sweep`` value; 1 and ``--concurrency`` reuse the runs already measured."""
    known = {1: sequential, args.concurrency: concurrent}
    return [known.get(c) or run_requests(client, bodies, f"sweep-{c}", c, progress, args.jobs) for c in args.sweep]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prompts = load_prompts(args.prompts, args.n)
    bodies = [{"prompt": p, "seed": args.seed, "format": args.format, **args.body} for p in prompts]
    extra = [c for c in args.sweep if c not in (1, args.concurrency)]
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    limits = httpx.Limits(max_connections=max([args.concurrency, *args.sweep]))
    with (
        httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client,
        tqdm(total=args.warmup + args.n * (2 + len(extra)), desc="requests", unit="req") as progress,
    ):
        warm = run_requests(client, [bodies[i % len(bodies)] for i in range(args.warmup)], "warmup", 1, progress, args.jobs)
        sequential = run_requests(client, bodies, "sequential", 1, progress, args.jobs)
        concurrent = run_requests(client, bodies, "concurrent", args.concurrency, progress, args.jobs)
        sweep = sweep_runs(client, bodies, args, sequential, concurrent, progress)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(args, sequential, concurrent, sweep)
    (args.out / "bench.md").write_text(markdown)
    report = report_json(args, sequential, concurrent, sweep)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    measured = [r for run in (sequential, concurrent) for r in run.requests]
    plot(args.out / "bench.png", measured, sweep)
    if warm.errors:
        print(f"warmup: {warm.errors}/{len(warm.requests)} requests failed")
    print(markdown)
    print(f"wrote {args.out / 'bench.md'}, bench.json and bench.png")
    return 0 if any(r.ok for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
