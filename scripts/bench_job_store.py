"""What the job store adds to a job, per write, on each backend: ``python -m scripts.bench_job_store``.

Runs N jobs' writes through a ``JobStore`` in this process, one job at a time, as the job runner
makes them for a textured GLB from a text prompt: create (durable: what ``202`` waits for), the
``running`` write, the image, the cut-out and the asset (the last one: what ``done`` waits for),
and a read of the job's state. Prints the median milliseconds of each and writes
``bench_job_store.json`` to ``--out`` (default: $OUT, else ./out). SQLite works in a temporary
folder (``--folder`` for another disk); ``--redis-url`` adds a Redis (its data is flushed first).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gen3d.service.job_store import (
    BackendConfig,
    JobStore,
    JobStoreConfig,
    StoredFile,
    open_store,
)

#: Sizes of the files of a default tiny-preset job (64 px image and cut-out, a 256 px atlas GLB).
FILES = {"image.png": 12_000, "cutout.png": 9_000, "asset.glb": 150_000}
REQUEST = json.dumps({"prompt": "a blue cube", "seed": 0}).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="jobs per backend")
    parser.add_argument("--folder", type=Path, help="where the SQLite store goes (default: a temporary folder)")
    parser.add_argument("--redis-url", help="also measure the Redis at this URL (its database is flushed)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out"))
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n must be >= 1, got {args.n}")
    return args


async def one_job(jobs: JobStore, job_id: str, times: dict[str, list[float]]) -> None:
    """The writes of one job, each timed into ``times``."""

    async def timed(name: str, call) -> object:
        start = time.perf_counter()
        result = await call
        times.setdefault(name, []).append(time.perf_counter() - start)
        return result

    claim = await timed("create", jobs.create(job_id, REQUEST, hold=True))
    await timed("running", jobs.advance(job_id, claim.token, status="running", stage="text_to_image"))
    for index, (name, size) in enumerate(FILES.items()):
        last = index == len(FILES) - 1
        files = {name: StoredFile(os.urandom(size), "application/octet-stream")}
        await timed(name, jobs.advance(job_id, claim.token, status="done" if last else "running", files=files))
    await timed("view", jobs.view(job_id))


async def measure(store: JobStore, n: int) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for index in range(n):
        await one_job(store, f"bench{index}", times)
    await store.close()
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="gen3d-jobs-"))
    backends = {"memory": BackendConfig(backend="memory"), "sqlite": BackendConfig(path=str(folder))}
    if args.redis_url:
        import redis  # only here: the other backends need no Redis client

        redis.Redis.from_url(args.redis_url).flushdb()
        backends["redis"] = BackendConfig(backend="redis", url=args.redis_url)
    bounds = {"max_jobs": args.n + 1, "max_bytes": 2**31}
    report = {name: asyncio.run(measure(open_store(JobStoreConfig(job_store=cfg, **bounds)), args.n)) for name, cfg in backends.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_job_store.json").write_text(json.dumps({"n": args.n, "median_ms": report}, indent=2))
    for name, medians in report.items():
        print(f"{name:7s} " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
