"""A gen3d graph served through the launcher for a benchmark: configured, started, driven, stopped.

Used by ``scripts/card_limit.py``. The graph starts as ``gen3d serve`` starts it
(``python -m gen3d.service.launcher CONFIG``: the MPS daemon when the config asks, then
``serve run``), with ``GEN3D_PROFILE_DIR`` set when its GPU replicas are to record trace windows.
Every wait is bounded; ``stop`` interrupts the launcher (drain, Serve down, MPS daemon quit) and,
if that does not end in time, kills the launcher and every process under it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from tqdm import tqdm

from gen3d.service.gpu_trace import CALLS_SUFFIX, PROFILE_DIR_ENV, START_FILE, STOP_FILE
from gen3d.service.mps import CONTROL_BINARY, PIPE_ENV
from scripts import bench

#: Lines of a serve log that mean a replica will never start (Serve would retry it forever).
FAILED = re.compile(r"OutOfMemoryError|DEPLOY_FAILED|failed with exception|failed to initialize|RayServeException")
MPS_UP = re.compile(r"MPS: control daemon up \(pipes in (\S+)\)")
STOP_TIMEOUT_S = 100.0


class GraphFailed(RuntimeError):
    """The graph did not come up; the message names why (and the log holds the rest)."""


@dataclass(frozen=True)
class GraphPlan:
    """One served graph of a benchmark.

    Attributes:
        name: its folder under the results.
        base_config: the serve config it starts from.
        port: HTTP port.
        mps: the config's ``args.mps``.
        text_to_image: overrides of the FLUX stage (``max_batch_size``, ``compile_cache_dir``).
        env: variables for the launcher, inherited by every replica (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``).
        deployment_env: per deployment, variables for its ``runtime_env`` (``CUDA_MPS_CLIENT_PRIORITY``).
    """

    name: str
    base_config: Path
    port: int
    mps: str = "off"
    text_to_image: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    deployment_env: dict[str, dict[str, str]] = field(default_factory=dict)


def plan_config(plan: GraphPlan) -> dict[str, Any]:
    """The base serve config with the plan's port, MPS mode, FLUX overrides and environment."""
    config = yaml.safe_load(plan.base_config.read_text())
    config["http_options"]["port"] = plan.port
    app = config["applications"][0]
    app["args"]["mps"] = plan.mps
    overrides = app["args"].setdefault("overrides", {})
    overrides["text_to_image"] = {**overrides.get("text_to_image", {}), **plan.text_to_image}
    for deployment in app["deployments"]:
        extra = plan.deployment_env.get(deployment["name"])
        if extra:
            options = deployment.setdefault("ray_actor_options", {})
            env_vars = options.setdefault("runtime_env", {}).setdefault("env_vars", {})
            env_vars.update(extra)
    return config


def gpu_replicas(config: dict[str, Any]) -> int:
    """Replicas with a GPU share: the traces one window should produce."""
    total = 0
    for deployment in config["applications"][0]["deployments"]:
        if (deployment.get("ray_actor_options") or {}).get("num_gpus", 0) > 0:
            auto = deployment.get("autoscaling_config")
            total += int(auto["max_replicas"] if auto else deployment.get("num_replicas", 1))
    return total


def drive(url: str, n: int, concurrency: int, body: dict[str, Any], mode: str, timeout_s: float = 120.0) -> bench.RunResult:
    """``n`` text requests (prompts cycling, seed = index) from ``concurrency`` clients."""
    bodies = [{"prompt": prompt, "seed": index, **body} for index, prompt in enumerate(bench.load_prompts(None, n))]
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=url, timeout=timeout_s, limits=limits) as client, tqdm(disable=True) as progress:
        return bench.run_requests(client, bodies, mode, concurrency, progress)


class TraceWindows:
    """Opens and closes the replicas' trace windows (``gen3d.service.gpu_trace``) in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def open(self, label: str) -> None:
        (self.directory / STOP_FILE).unlink(missing_ok=True)
        partial = self.directory / f"{START_FILE}.partial"
        partial.write_text(label)
        partial.replace(self.directory / START_FILE)

    def close(self) -> None:
        (self.directory / STOP_FILE).touch()

    def written(self, label: str) -> int:
        return len(list((self.directory / label).glob(f"*{CALLS_SUFFIX}")))

    def wait(self, label: str, expected: int, timeout_s: float) -> int:
        """Wait until ``expected`` replicas wrote ``label`` (idle ones close at their health check)."""
        deadline = time.monotonic() + timeout_s
        while self.written(label) < expected and time.monotonic() < deadline:
            time.sleep(1.0)
        return self.written(label)


class MemorySampler:
    """The card's used memory every 200 ms (nvidia-smi), for the run's peak."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            with self.path.open("w") as out:
                command = [smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "200"]
                self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)

    def stop(self) -> int | None:
        """The peak MiB of any card, or None without nvidia-smi."""
        if self.process is None:
            return None
        self.process.terminate()
        self.process.wait(timeout=10)
        values = [int(v) for v in self.path.read_text().split() if v.strip().isdigit()]
        return max(values) if values else None


class Served:
    """One plan's graph: its config, launcher process, log and trace folder.

    Args:
        plan: what to serve.
        folder: where its config, log and results go.
        traces: its ``GEN3D_PROFILE_DIR`` (large files: keep it out of the results).
    """

    def __init__(self, plan: GraphPlan, folder: Path, traces: Path) -> None:
        self.plan = plan
        self.folder = folder
        self.traces = traces
        self.config = plan_config(plan)
        self.url = f"http://127.0.0.1:{plan.port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "serve.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log = folder / "serve.log"

    def start(self, timeout_s: float, trace: bool = True) -> float:
        """Start the launcher and wait for ``/health`` 200; the seconds it took.

        Args:
            timeout_s: the longest wait.
            trace: give the replicas ``GEN3D_PROFILE_DIR`` (only graphs that record a timeline need it).

        Raises:
            GraphFailed: the launcher exited, a replica failed, or ``timeout_s`` passed.
        """
        env = {**os.environ, **self.plan.env, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        if trace:
            env[PROFILE_DIR_ENV] = str(self.traces)
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = f"{root}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(root)
        start = time.monotonic()
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gen3d.service.launcher", str(self.config_path)],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        while time.monotonic() - start < timeout_s:
            if self.process.poll() is not None:
                raise GraphFailed(f"the launcher exited with {self.process.returncode}: {self.tail()}")
            failure = FAILED.search(self.log.read_text(errors="replace"))
            if failure:
                raise GraphFailed(f"a replica failed to start ({failure.group(0)}): {self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(2.0)
        raise GraphFailed(f"not ready after {timeout_s:.0f} s: {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])

    def mps_pipe(self) -> str | None:
        """The pipe folder of the MPS daemon the launcher started, if it did."""
        found = MPS_UP.search(self.log.read_text(errors="replace"))
        return found.group(1) if found else None

    def mps_clients(self) -> dict[str, Any]:
        """Whether MPS is up, and the client processes of its servers (the replicas that joined)."""
        pipe = self.mps_pipe()
        binary = shutil.which(CONTROL_BINARY)
        if pipe is None or binary is None:
            return {"up": False}
        env = {**os.environ, PIPE_ENV: pipe}

        def ask(command: str) -> list[str]:
            done = subprocess.run([binary], input=f"{command}\n", env=env, capture_output=True, text=True, timeout=20, check=False)
            return done.stdout.split()

        servers = ask("get_server_list")
        clients = [pid for server in servers for pid in ask(f"get_client_list {server}")]
        return {"up": True, "pipe": pipe, "servers": servers, "clients": len(clients)}

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, stop_ray: bool = False) -> str:
        """Stop gracefully (SIGINT: drain, Serve down, MPS quit); kill what is left after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return "not running"
        descendants = psutil.Process(self.process.pid).children(recursive=True)
        pipe = self.mps_pipe()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
            outcome = "stopped"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            outcome = "killed after the graceful stop timed out"
        # What the launcher started and left behind (serve run, its Ray processes): ours to end.
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if stop_ray:  # the GPU box is the benchmark's own: no cluster may keep the port or the card
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=60, check=False)
        binary = shutil.which(CONTROL_BINARY)
        if pipe is not None and binary is not None and Path(pipe).exists():
            subprocess.run([binary], input="quit\n", env={**os.environ, PIPE_ENV: pipe}, capture_output=True, timeout=30, check=False)
            outcome += ", MPS daemon quit by the benchmark"
        return outcome


def fault_under_load(served: Served, clients: int, limit_s: float) -> dict[str, Any]:
    """A fatal GPU fault from one MPS client (``scripts/mps_fault.py``) while ``clients`` clients send
    requests: what they got, and when a request sent after the fault answered 200 (within ``limit_s``)."""
    pipe = served.mps_pipe()
    if pipe is None:
        return {"skipped": "MPS is not up"}
    records: list[tuple[float, float, int]] = []
    stop = threading.Event()
    origin = time.monotonic()

    def client(index: int) -> None:
        with httpx.Client(base_url=served.url, timeout=30.0) as http:
            while not stop.is_set():
                start = time.monotonic() - origin
                try:
                    status = http.post("/generate", json={"prompt": f"fault probe {index}", "seed": index}).status_code
                except httpx.HTTPError:
                    status = 0
                records.append((start, time.monotonic() - origin, status))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(5.0)
    root = Path(__file__).resolve().parent.parent
    try:
        injector = subprocess.run([sys.executable, "-m", "scripts.mps_fault"], cwd=root, env={**os.environ, PIPE_ENV: pipe},
                                  capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        injected = {"injector_exit": injector.returncode, "injector_output": (injector.stdout + injector.stderr)[-400:]}
    except subprocess.TimeoutExpired:
        injected = {"injector_exit": None, "injector_output": "no exit within 60 s"}
    fault_at = time.monotonic() - origin  # the kernel faults just before the injector exits
    recovered_at = None
    while time.monotonic() - origin < fault_at + limit_s and recovered_at is None:
        time.sleep(2.0)
        answered = [end for start, end, status in records if status == 200 and start > fault_at + 1.0]
        recovered_at = min(answered) if answered else None
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    after_fault = [status for start, end, status in records if end > fault_at and (recovered_at is None or start < recovered_at)]
    return {
        **injected,
        "statuses_before": _count(status for start, end, status in records if end <= fault_at),
        "statuses_until_recovery": _count(after_fault),
        "recovered_after_s": None if recovered_at is None else recovered_at - fault_at,
        "waited_s": limit_s,
        "wedged_lines": served.log.read_text(errors="replace").count("wedged by a device error"),
    }


def _count(statuses) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def sweep_summary(bench_json: Path) -> dict[str, Any]:
    """assets/s per concurrency, p50 alone, p50/p99 at the concurrent run, stage medians alone and there."""
    report = json.loads(bench_json.read_text())
    runs = report["runs"]
    concurrent = [r for r in report["requests"] if r["mode"] == "concurrent" and r["status"] == 200]
    latencies = sorted(r["latency_s"] for r in concurrent)
    return {
        "assets_per_s": {str(row["concurrency"]): row["assets_per_s"] for row in report["sweep"]},
        "errors": {mode: run["errors"] for mode, run in runs.items()},
        "p50_sequential_s": runs["sequential"]["summary"]["median"]["total"],
        "p50_concurrent_s": runs["concurrent"]["summary"]["median"]["client"],
        "p99_concurrent_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "stages_sequential": runs["sequential"]["summary"]["median"],
        "stages_concurrent": runs["concurrent"]["summary"]["median"],
    }
