"""CPU seconds the ingress and the HTTP proxy spend per request of a local service.

``python -m scripts.serve_cpu_cost --root-pid PID --url http://127.0.0.1:8093 -n 40``

PID is the process that started Ray (``serve run`` or ``gen3d serve``): the ingress replicas and
the proxy are found among its descendants by their Ray process titles. Sends ``-n`` requests of
each ``--body`` (JSON) from ``--concurrency`` clients and reads the processes' CPU times before
and after, less what they use when idle (the ingress's drain heartbeat, measured over
``--idle-s`` first). Prints, per body, the answer size and the seconds per request: the inputs
``ingress_cpu_s``, ``proxy_cpu_s`` and ``proxy_cpu_s_per_mb`` of ``scripts/capacity.py``
(the per-MB cost is the slope between the smallest and the largest answer).
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import psutil

INGRESS_TITLE = "ray::ServeReplica:gen3d:Ingress"
PROXY_TITLE = "ray::ProxyActor"
DEFAULT_BODIES = ('{"prompt": "a cup", "texture": "vertex"}', '{"prompt": "a cup", "format": "splat"}')


@dataclass(frozen=True)
class Cost:
    """CPU seconds per request of one kind, and the answer's size in MB."""

    body: str
    answer_mb: float
    ingress_s: float
    proxy_s: float


def processes(root_pid: int, title: str) -> list[psutil.Process]:
    """Descendants of ``root_pid`` whose command line starts with ``title``."""
    found = []
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            if child.cmdline() and child.cmdline()[0].startswith(title):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    if not found:
        raise RuntimeError(f"no process titled {title!r} under pid {root_pid}")
    return found


def cpu_seconds(group: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in group)


def idle_rates(args: argparse.Namespace) -> tuple[float, float]:
    """CPU seconds per second the ingress and the proxy use with no request in flight."""
    ingress, proxy = processes(args.root_pid, INGRESS_TITLE), processes(args.root_pid, PROXY_TITLE)
    before = cpu_seconds(ingress), cpu_seconds(proxy)
    time.sleep(args.idle_s)
    return (cpu_seconds(ingress) - before[0]) / args.idle_s, (cpu_seconds(proxy) - before[1]) / args.idle_s


def measure(args: argparse.Namespace, body: dict, idle: tuple[float, float]) -> Cost:
    """Send ``args.n`` requests of ``body``; the CPU time the processes used beyond idle, per request."""
    ingress, proxy = processes(args.root_pid, INGRESS_TITLE), processes(args.root_pid, PROXY_TITLE)
    with httpx.Client(base_url=args.url, timeout=300) as client:
        client.post("/generate", json=body).raise_for_status()  # warm, and the size of the answer
        size = len(client.post("/generate", json=body).content)
        before, start = (cpu_seconds(ingress), cpu_seconds(proxy)), time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            statuses = list(pool.map(lambda _: client.post("/generate", json=body).status_code, range(args.n)))
        after, wall = (cpu_seconds(ingress), cpu_seconds(proxy)), time.perf_counter() - start
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"{body}: answers {sorted(set(statuses))}, expected only 200")
    ingress_s, proxy_s = ((a - b - rate * wall) / args.n for a, b, rate in zip(after, before, idle, strict=True))
    return Cost(json.dumps(body), size / 1e6, ingress_s, proxy_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root-pid", type=int, required=True, help="pid of the process that started Ray")
    parser.add_argument("--url", default="http://127.0.0.1:8093")
    parser.add_argument("-n", type=int, default=40, help="requests per body")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--body", action="append", help="JSON request body (repeatable)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds to measure the idle CPU use over")
    args = parser.parse_args(argv)
    idle = idle_rates(args)
    print(f"idle: ingress {idle[0] * 1e3:.1f} ms/s, proxy {idle[1] * 1e3:.1f} ms/s")
    costs = [measure(args, json.loads(body), idle) for body in args.body or DEFAULT_BODIES]
    for cost in costs:
        print(f"{cost.body}: {cost.answer_mb:.3f} MB, ingress {cost.ingress_s * 1e3:.2f} ms, proxy {cost.proxy_s * 1e3:.2f} ms a request")
    small, large = min(costs, key=lambda c: c.answer_mb), max(costs, key=lambda c: c.answer_mb)
    if large.answer_mb > small.answer_mb:
        slope = (large.proxy_s - small.proxy_s) / (large.answer_mb - small.answer_mb)
        print(f"proxy per MB: {slope * 1e3:.2f} ms (between {small.answer_mb:.3f} and {large.answer_mb:.3f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
