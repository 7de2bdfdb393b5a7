"""The job path's overhead against ``/generate``, on a running service.

``python -m scripts.bench_jobs --url http://127.0.0.1:8093 -n 50``

Sends N requests both ways, one at a time and alternating (drift in the machine's load then hits
both alike): ``POST /generate`` (the file comes in the answer), and a job (``POST /jobs``, then
its event stream until ``done``, as ``scripts/bench.py --jobs`` times it; then the asset's
download, timed apart). Prints and writes ``bench_jobs.json`` to ``--out`` (default: $OUT, else
./out): p50 and p95 of each path, and the overhead at p50 (job p50 minus ``/generate`` p50, and
the median of the per-pair differences).
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from scripts.bench import job_until_done, load_prompts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8093", help="service base URL")
    parser.add_argument("-n", type=int, default=50, help="requests each way")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pairs sent first")
    parser.add_argument("--body", type=json.loads, default={}, help="JSON object of extra request fields")
    parser.add_argument("--api-key", help="value of the X-API-Key header, if the service needs one")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out"))
    args = parser.parse_args(argv)
    if args.n < 1 or args.warmup < 0:
        parser.error(f"-n must be >= 1 and --warmup >= 0, got {args.n} and {args.warmup}")
    return args


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def pair(client: httpx.Client, body: dict) -> tuple[float, float, float]:
    """Seconds of ``/generate``, of a job until done, and of the job's asset download."""
    generate_s, answer = timed(lambda: client.post("/generate", json=body))
    answer.raise_for_status()
    job_s, state = timed(lambda: job_until_done(client, body))
    if state.get("status") != "done":
        raise RuntimeError(f"job ended {state.get('status')}: {state.get('error')}")
    download_s, asset = timed(lambda: client.get(state["files"]["asset"]))
    asset.raise_for_status()
    return generate_s, job_s, download_s


def stats(seconds: list[float]) -> dict[str, float]:
    return {"p50_s": statistics.median(seconds), "p95_s": float(np.percentile(seconds, 95)), "mean_s": statistics.fmean(seconds)}


def summary(generated: list[float], jobs: list[float], downloads: list[float]) -> dict[str, Any]:
    """Each path's statistics and the job path's overhead (seconds), from paired measurements."""
    return {
        "n": len(generated),
        "generate": stats(generated),
        "job_to_done": stats(jobs),
        "asset_download": stats(downloads),
        "overhead_p50_s": statistics.median(jobs) - statistics.median(generated),
        "overhead_pair_median_s": statistics.median(j - g for j, g in zip(jobs, generated, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prompts = load_prompts(None, args.warmup + args.n)
    bodies = [{"prompt": prompt, "seed": i, **args.body} for i, prompt in enumerate(prompts)]
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=300) as client:
        pairs = [pair(client, body) for body in bodies][args.warmup :]
    generated, jobs, downloads = (list(column) for column in zip(*pairs, strict=True))
    report = {"url": args.url, "body": args.body, **summary(generated, jobs, downloads)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_jobs.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['n']} sequential requests each way: /generate p50 {report['generate']['p50_s'] * 1000:.1f} ms, "
        f"job to done p50 {report['job_to_done']['p50_s'] * 1000:.1f} ms (asset download p50 "
        f"{report['asset_download']['p50_s'] * 1000:.1f} ms more); overhead at p50 "
        f"{report['overhead_p50_s'] * 1000:.1f} ms (median of pairs {report['overhead_pair_median_s'] * 1000:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
