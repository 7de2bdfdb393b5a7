"""Start-up of the text_to_image stage: cold, warm and precompiled starts of each option, each in a fresh process.

On the GPU box, from the repo root (each plan fits one 10-minute command; --budget-s bounds it):

    python -m scripts.bench_startup --plan core  --out $OUT     # the numbers that decide (~9 min)
    python -m scripts.bench_startup --plan extra --out $OUT     # the rest, as far as the budget goes
    python -m scripts.bench_startup --plan real --hf-cache DIR --out $OUT   # after write_random_checkpoints

Every row is one ``python -m scripts.startup_probe`` process: build the preset's stage (full size,
random weights), warm it up, time requests (see that script for what a row holds). Its cache role:

    cold   its compile-cache group starts empty (a first start on a new machine, no precompile)
    warm   reuses the group a cold row filled (a restart on the same machine)
    fresh  an empty group holding only the ``artifacts.bin`` another group's cold row saved
           (a new machine after ``gen3d.service.precompile``, or with the artifacts copied in)
    reuse  the group as it is, empty or not (the row records which)

Rows run in plan order while the budget lasts; a row is killed at the budget's end and recorded as
such. After every row, OUT/bench_startup.json and OUT/bench_startup.md are rewritten, child logs go
to OUT/logs/<label>.log (TORCH_LOGS=recompiles,graph_breaks) and each row's image of seed 0 is
compared with the plan's first row (same random weights, so any difference comes from the option).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gen3d.devices import CAPPED_ALLOCATOR_ENV
from gen3d.parts.compile_cache import ARTIFACTS_NAME, KEY_NAME

#: The presets' T5 setting from now on: eager T5 inside its CUDA graph (about 10 ms per request).
TORCHAO = {"fp8_weights": "torchao", "compile_text_encoder": False}
PLAIN = {"fp8_weights": "plain", "compile_text_encoder": False}
#: A row is not started with less budget than this left.
MIN_ROW_S = 45.0


@dataclass(frozen=True)
class Row:
    """One measured start.

    Attributes:
        label: names the row and its files.
        overrides: text_to_image settings over the preset.
        cache: the compile-cache group (a folder under --cache-root).
        role: ``cold``, ``warm``, ``fresh`` or ``reuse``.
        fresh_from: for ``fresh``, the group whose saved artifacts are copied in.
        save_artifacts: write the group's artifacts after the requests (as gen3d.service.precompile).
        env: extra environment of the process.
    """

    label: str
    overrides: dict[str, Any]
    cache: str
    role: str
    fresh_from: str | None = None
    save_artifacts: bool = False
    env: dict[str, str] = field(default_factory=dict)


PLANS: dict[str, list[Row]] = {
    "core": [
        Row("plain-cold", PLAIN, "plain", "cold", save_artifacts=True),
        Row("plain-warm", PLAIN, "plain", "warm"),
        Row("plain-fresh", PLAIN, "plain-fresh", "fresh", fresh_from="plain"),
        Row("torchao-cold", TORCHAO, "torchao", "cold"),
        Row("torchao-warm", TORCHAO, "torchao", "warm"),
    ],
    # Whatever core had no budget left for (pass --only to pick), then the other options.
    "extra": [
        Row("torchao-cold", TORCHAO, "torchao", "cold"),
        Row("torchao-warm", TORCHAO, "torchao", "warm"),
        Row("plain-notune-cold", {**PLAIN, "kernel_tuning": False}, "plain-notune", "cold"),
        Row("plain-notune-warm", {**PLAIN, "kernel_tuning": False}, "plain-notune", "warm"),
        Row("plain-t5-cold", {**PLAIN, "compile_text_encoder": True}, "plain-t5", "cold"),
        Row("plain-t5-warm", {**PLAIN, "compile_text_encoder": True}, "plain-t5", "warm"),
    ],
    # The real loaders on scripts/write_random_checkpoints.py's files (same seed: the image must not
    # change), with the "plain" group's compile cache when core ran on this machine.
    "real": [
        Row("plain-random", PLAIN, "plain", "reuse"),
        Row("plain-real", {**PLAIN, "mode": "real"}, "plain", "reuse", env={"HF_HUB_OFFLINE": "1"}),
    ],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="core")
    parser.add_argument("--only", default=None, help="comma-separated row labels of the plan to run")
    parser.add_argument("--preset", default="random", help="preset every row starts from")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="text_to_image override for every row (before the row's own)")
    parser.add_argument("--budget-s", type=float, default=510.0, help="wall-clock budget of the whole plan")
    parser.add_argument("--repeats", type=int, default=10, help="timed requests per step count and row")
    parser.add_argument("--cache-root", default="/tmp/gen3d_startup_cache",
                        help="holds one compile-cache group per option (kept between plans: warm rows need it)")
    parser.add_argument("--hf-cache", default=None,
                        help="HF_HUB_CACHE of the real plan (write_random_checkpoints output)")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="results folder (default $OUT or ./out)")
    args = parser.parse_args()
    if args.plan == "real" and args.hf_cache is None:
        parser.error("--plan real needs --hf-cache (a folder written by scripts/write_random_checkpoints.py)")
    return args


def prepare_cache(row: Row, root: Path) -> None:
    """Give the row's group the state its role asks for.

    Raises:
        FileNotFoundError: a warm or fresh row whose source group was never filled.
    """
    group = root / row.cache
    if row.role == "reuse":
        group.mkdir(parents=True, exist_ok=True)
        return
    if row.role == "warm":
        if not group.is_dir():
            raise FileNotFoundError(f"{row.label}: no cache group {group}; run its cold row first")
        return
    shutil.rmtree(group, ignore_errors=True)
    group.mkdir(parents=True)
    if row.role == "fresh":
        sources = sorted((root / str(row.fresh_from)).glob(f"*/{ARTIFACTS_NAME}"))
        if not sources:
            raise FileNotFoundError(f"{row.label}: group {row.fresh_from} saved no {ARTIFACTS_NAME}")
        for artifacts in sources:
            target = group / artifacts.parent.name
            target.mkdir()
            shutil.copy2(artifacts, target / ARTIFACTS_NAME)
            shutil.copy2(artifacts.parent / KEY_NAME, target / KEY_NAME)


def probe_command(row: Row, args: argparse.Namespace) -> list[str]:
    overrides = [*args.set, *(f"{name}={json.dumps(value)}" for name, value in row.overrides.items())]
    overrides.append(f"compile_cache_dir={Path(args.cache_root).resolve() / row.cache}")
    command = [sys.executable, "-m", "scripts.startup_probe", "--preset", args.preset, "--label", row.label,
               "--repeats", str(args.repeats), "--out", args.out]
    command += [f"--set={item}" for item in overrides]
    return command + (["--save-artifacts"] if row.save_artifacts else [])


def run_row(row: Row, args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    """Run one probe process within ``seconds_left``; return its row, or what went wrong."""
    result: dict[str, Any] = {"label": row.label, "role": row.role, "cache": row.cache}
    group = Path(args.cache_root) / row.cache
    result["cache_had_entries"] = group.is_dir() and any(group.rglob("*.py"))
    try:
        prepare_cache(row, Path(args.cache_root))
    except FileNotFoundError as err:
        return {**result, "error": str(err)}
    env = {**CAPPED_ALLOCATOR_ENV, **os.environ, "TORCH_LOGS": "recompiles,graph_breaks", **row.env}
    if args.hf_cache is not None:
        env["HF_HUB_CACHE"] = str(Path(args.hf_cache).resolve())
    log = Path(args.out) / "logs" / f"{row.label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        # Own session: on timeout the whole group goes, inductor's compile workers included.
        process = subprocess.Popen(probe_command(row, args), env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=seconds_left)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return {**result, "error": f"killed at the budget's end after {time.perf_counter() - start:.0f} s"}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    row_file = Path(args.out) / "rows" / f"{row.label}.json"
    if code != 0 or not row_file.is_file():
        tail = log.read_text()[-2000:]
        return {**result, "error": f"exit code {code}; log tail: {tail}"}
    return {**result, **json.loads(row_file.read_text())}


def image_difference(out: Path, label: str, reference: str) -> dict[str, float] | None:
    """Mean and max absolute pixel difference between two rows' images (None if either is missing)."""
    paths = [out / "images" / f"{name}.npy" for name in (label, reference)]
    if not all(path.is_file() for path in paths):
        return None
    image, base = (np.load(path).astype(np.int16) for path in paths)
    difference = np.abs(image - base)
    return {"reference": reference, "mean": round(float(difference.mean()), 3), "max": int(difference.max())}


def summary_line(row: dict[str, Any]) -> str:
    """One markdown table row: start-up phases, compile split, cache hits, request times."""
    if "error" in row:
        error = " ".join(row["error"][:160].replace("|", "/").split())  # one table cell
        return f"| {row['label']} | {row['role']} | error: {error} |" + " |" * 8
    startup, totals = row["startup_s"], row["compile"]["totals"]
    counters = row["compile"]["counters"]
    aot, inductor = counters.get("aot_autograd", {}), counters.get("inductor", {})
    caches = (f"AOT {aot.get('autograd_cache_hit', 0)}/{aot.get('autograd_cache_miss', 0)}/"
              f"{aot.get('autograd_cache_bypass', 0)}, FX {inductor.get('fxgraph_cache_hit', 0)}/"
              f"{inductor.get('fxgraph_cache_miss', 0)}/{inductor.get('fxgraph_cache_bypass', 0)}")
    requests = ", ".join(f"{seconds:.3f}" for seconds in row["request_s"].values())
    difference = row.get("image_difference")
    image = "-" if difference is None else f"{difference['mean']:.2f} / {difference['max']}"
    cells = [
        row["label"], row["role"], f"{startup['process_s']:.1f}", f"{startup.get('weights', 0):.1f}",
        f"{startup.get('fp8', 0):.1f}", f"{startup.get('warmup', 0):.1f}", f"{totals.get('dynamo_only_s', 0):.1f}",
        f"{totals.get('backend_compile_time_s', 0):.1f}", caches, requests, image,
    ]
    return "| " + " | ".join(cells) + " |"


def write_results(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_startup.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    lines = [
        f"# text_to_image start-up, plan {meta['plan']} ({meta['preset']} preset)",
        "",
        "Seconds. ready = process start to warm (imports included); warm-up = every allowed shape's first",
        "request (compiles and CUDA-graph captures); Dynamo = frame compile time less the backend;",
        "backend = AOTAutograd + Inductor + Triton; caches = hit/miss/bypass; requests = median per",
        "allowed step count at the default size; image = mean / max |difference| from the first row.",
        "",
        "| row | role | ready | weights | fp8 | warm-up | Dynamo | backend | caches | requests | image |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        *(summary_line(row) for row in rows),
    ]
    (out / "bench_startup.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    deadline = time.perf_counter() + args.budget_s
    out = Path(args.out)
    plan = PLANS[args.plan]
    if args.only is not None:
        chosen = set(args.only.split(","))
        plan = [row for row in plan if row.label in chosen]
    meta = {"plan": args.plan, "preset": args.preset, "set": args.set, "budget_s": args.budget_s}
    rows: list[dict[str, Any]] = []
    for row in plan:
        seconds_left = deadline - time.perf_counter()
        if seconds_left < MIN_ROW_S:
            result: dict[str, Any] = {"label": row.label, "role": row.role, "error": "skipped: budget spent"}
        else:
            print(f"{row.label}: starting ({seconds_left:.0f} s of budget left)", flush=True)
            result = run_row(row, args, seconds_left)
            if "error" not in result:
                result["image_difference"] = image_difference(out, row.label, plan[0].label)
        rows.append(result)
        write_results(out, meta, rows)
        print(summary_line(result), flush=True)
    print((out / "bench_startup.md").read_text())


if __name__ == "__main__":
    main()
