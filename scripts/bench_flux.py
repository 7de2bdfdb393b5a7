"""Benchmark diffusers' default FluxPipeline against our text_to_image stage, full size, random weights.

One process, one set of full-size FLUX.1-schnell models (random bf16 weights on the GPU), shared by
every row. Rows run in this order because quantisation rewrites the shared models in place:

    default             diffusers FluxPipeline as documented: bf16, eager, default attention
    bf16                ours (TextToImage): bf16, eager
    bf16-graphs         ours: bf16, T5 / transformer steps / VAE decode replayed as CUDA graphs
    fp8                 ours: transformer (and T5, see --text-encoder-precision) float8 via torchao
    fp8-graphs          ours: fp8 + CUDA graphs
    fp8-compile         ours: fp8 + torch.compile of the transformer's repeated blocks and of T5
    fp8-compile-graphs  ours: fp8 + compile + CUDA graphs (the production preset)

A "-graphs" row reuses the models (and compiled code) of the row before it and wraps them in CUDA
graphs through the stage's own ``graph_pipeline_``; they are unwrapped again before the next setting.

Each row is prompt -> uint8 image wall time (text encoders, denoising and VAE decode included,
CUDA synchronised), the median over --repeats runs after --warmup runs, and the peak allocated
memory over the timed runs. Then --phase-runs more runs split the time into the prompt encoding
(CLIP + T5) and the VAE decode, each synchronised; the rest is denoising and pipeline overhead.
Results go to --out as bench_flux.json and bench_flux.md after every row; a rerun skips rows
already measured (resume), unless --fresh.

Timing notes: the first fp8-compile row of each size compiles for minutes (torchao's recommended
inductor settings tune kernels); at 512 px the eager rows are CPU-launch bound and noisy.

Example (H100):
    python scripts/bench_flux.py --sizes 512,1024 --steps 3,4 --out out/flux
    python scripts/bench_flux.py --variants fp8 --sizes 512 --memory-gib 17   # fp8 fits a 24 GB card
"""

import argparse
import contextlib
import datetime
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("default", "bf16", "bf16-graphs", "fp8", "fp8-graphs", "fp8-compile", "fp8-compile-graphs")
PROMPT = "a small wooden toy robot standing on a white table, studio lighting, high detail"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024", help="square image sides in pixels, comma-separated")
    parser.add_argument("--steps", default="3,4", help="denoising step counts, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per row before timing")
    parser.add_argument("--phase-runs", type=int, default=3, help="extra synchronised runs for the phase split")
    parser.add_argument("--max-sequence-length", type=int, default=256, help="T5 tokens (schnell's limit: 256)")
    parser.add_argument("--text-encoder-precision", choices=("bf16", "fp8"), default="fp8",
                        help="T5 precision in the fp8 rows")
    parser.add_argument("--attention-backend", default=None, help="diffusers attention backend for our rows")
    cap = parser.add_mutually_exclusive_group()
    cap.add_argument("--memory-fraction", type=float, default=None,
                     help="cap fp8 rows at this share of the card (set_per_process_memory_fraction)")
    cap.add_argument("--memory-gib", type=float, default=None, help="cap fp8 rows at this many GiB")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="results folder (default $OUT or ./out)")
    parser.add_argument("--fresh", action="store_true", help="ignore rows already in --out")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.steps = [int(s) for s in args.steps.split(",")]
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected a subset of {list(VARIANTS)}")
    # Fixed order regardless of the command line: in-place quantisation must follow the bf16 rows.
    args.variants = [v for v in VARIANTS if v in chosen]
    if args.repeats < 1 or args.warmup < 1:
        parser.error("--repeats and --warmup must be >= 1 (the first run pays lazy init and compilation)")
    return args


def row_key(row: dict[str, Any]) -> tuple[str, int, int]:
    return row["variant"], row["size"], row["steps"]


def load_rows(path: Path, fresh: bool) -> list[dict[str, Any]]:
    """Successful rows of an earlier run (failed rows are measured again)."""
    if fresh or not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    return [row for row in rows if "error" not in row]


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import diffusers
    import torchao

    return {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "torchao": torchao.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": "measured with random weights (full-size FLUX.1-schnell architecture)",
        "max_sequence_length": args.max_sequence_length,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "fp8_text_encoder_precision": args.text_encoder_precision,
        "attention_backend": args.attention_backend,
        "memory_cap": {"fraction": args.memory_fraction, "gib": args.memory_gib, "applies_to": "fp8 rows"},
        "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }


def write_results(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flux.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    baseline = {(r["size"], r["steps"]): r["median_s"] for r in rows if r["variant"] == "default" and "error" not in r}
    lines = [
        "# FLUX.1-schnell text_to_image benchmark",
        "",
        f"{meta['weights']}; {meta['device']}, torch {meta['torch']}, diffusers {meta['diffusers']}, "
        f"torchao {meta['torchao']}, {meta['date']}.",
        f"Prompt -> uint8 image wall time incl. CLIP + T5 ({meta['max_sequence_length']} tokens) and VAE decode; "
        f"median of {meta['repeats']} after {meta['warmup']} warm-up runs. fp8 rows: T5 in "
        f"{meta['fp8_text_encoder_precision']}. Memory cap: {meta['memory_cap']}.",
        "",
        "| variant | size | steps | median s | min s | speed-up vs default | encode s | decode s | "
        "peak alloc GiB | peak reserved GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['size']} | {r['steps']} | error: {r['error'][:80]} | | | | | | |")
            continue
        base = baseline.get((r["size"], r["steps"]))
        speedup = f"{base / r['median_s']:.2f}x" if base else "-"
        phases = " | ".join(f"{r[key]:.3f}" if key in r else "-" for key in ("encode_s", "decode_s"))
        lines.append(
            f"| {r['variant']} | {r['size']} | {r['steps']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {speedup} | "
            f"{phases} | {r['peak_allocated_gib']:.2f} | {r['peak_reserved_gib']:.2f} |"
        )
    (out / "bench_flux.md").write_text("\n".join(lines) + "\n")


def measure(run: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Median wall time of ``run`` (synchronised) and peak memory over the timed runs."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    timed = synchronised_timer(run, device, times)
    for _ in range(repeats):
        timed()
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    }


@dataclass(frozen=True)
class Runner:
    """One pipeline and how to generate with it at a given (size, steps)."""

    pipe: Any
    generate: Callable[[int, int], None]


def default_runner(components: dict[str, Any], device: torch.device, args: argparse.Namespace) -> Runner:
    """diffusers' FluxPipeline used as its docs show for schnell (guidance 0, PIL output)."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**components)
    pipe.set_progress_bar_config(disable=True)

    def run(size: int, steps: int) -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        pipe(prompt=PROMPT, num_inference_steps=steps, height=size, width=size, guidance_scale=0.0,
             max_sequence_length=args.max_sequence_length, generator=generator)

    return Runner(pipe, run)


def setting(variant: str) -> tuple[bool, bool]:
    """(fp8, compile) of a variant; its "-graphs" twin shares them."""
    return variant.startswith("fp8"), "compile" in variant


def our_runner(variant: str, components: dict[str, Any], device: torch.device, args: argparse.Namespace) -> Runner:
    """Our TextToImage stage over the shared models, quantised in place for the fp8 variants."""
    from diffusers import FluxPipeline

    from gen3d.config import TextToImageConfig
    from gen3d.stages.text_to_image import (
        TextToImage,
        check_precision_support,
        quantize_pipeline_,
    )

    fp8, compiled = setting(variant)
    cfg = TextToImageConfig(
        mode="random", device=str(device), precision="fp8" if fp8 else "bf16",
        text_encoder_precision=args.text_encoder_precision if fp8 else "bf16",
        compile=compiled, attention_backend=args.attention_backend,
        width=args.sizes[0], height=args.sizes[0], steps=args.steps[0], allowed_sizes=args.sizes,
        allowed_steps=args.steps, max_sequence_length=args.max_sequence_length,
    )
    check_precision_support(cfg, device)
    pipe = FluxPipeline(**components)
    quantize_pipeline_(pipe, cfg)
    stage = TextToImage(pipe, cfg, device)

    def run(size: int, steps: int) -> None:
        stage.generate(PROMPT, seed=0, steps=steps, width=size, height=size)

    return Runner(pipe, run)


def synchronised_timer(fn: Callable[..., Any], device: torch.device, into: list[float]) -> Callable[..., Any]:
    """``fn`` timed from a synchronised start to a synchronised end, appending seconds to ``into``.

    On a CPU device there is no queued work, so there is nothing to synchronise.
    """

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(*args: Any, **kwargs: Any) -> Any:
        synchronise()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        synchronise()
        into.append(time.perf_counter() - start)
        return result

    return timed


@contextlib.contextmanager
def timed_methods(target: Any, names: tuple[str, ...], device: torch.device) -> Iterator[dict[str, list[float]]]:
    """Inside, each method ``names`` of ``target`` is a ``synchronised_timer``: yields the seconds of
    every call by name. On exit the instance attributes go, and the class's methods answer again."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        setattr(target, name, synchronised_timer(getattr(target, name), device, seconds[name]))
    try:
        yield seconds
    finally:
        for name in names:
            delattr(target, name)


def measure_phases(runner: Runner, run: Callable[[], None], device: torch.device, runs: int) -> dict[str, Any]:
    """Median seconds of the prompt encoding and the VAE decode, and of the rest of the call."""
    encode: list[float] = []
    decode: list[float] = []
    total: list[float] = []
    pipe, vae = runner.pipe, runner.pipe.vae
    decode_before = vae.__dict__.get("decode")
    pipe.encode_prompt = synchronised_timer(pipe.encode_prompt, device, encode)
    vae.decode = synchronised_timer(vae.decode, device, decode)
    try:
        for _ in range(runs):
            synchronised_timer(run, device, total)()
    finally:
        del pipe.encode_prompt
        if decode_before is None:
            del vae.decode
        else:
            vae.decode = decode_before
    phases = {"encode_s": statistics.median(encode), "decode_s": statistics.median(decode)}
    phases["denoise_and_rest_s"] = statistics.median(total) - phases["encode_s"] - phases["decode_s"]
    return phases


def measure_row(runner: Runner, size: int, steps: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    def run() -> None:
        runner.generate(size, steps)

    row = measure(run, device, args.warmup, args.repeats)
    if args.phase_runs > 0:
        row.update(measure_phases(runner, run, device, args.phase_runs))
    return row


def apply_memory_cap(device: torch.device, args: argparse.Namespace) -> None:
    """Cap the allocator once the bf16 copies are gone, so the cap bounds the fp8 pipeline alone."""
    from gen3d.devices import cap_memory, cap_memory_gib

    torch.cuda.empty_cache()
    if args.memory_gib is not None:
        cap_memory_gib(device, args.memory_gib)
    elif args.memory_fraction is not None:
        cap_memory(device, args.memory_fraction)


def runner_for(
    variant: str, previous: tuple[str, Runner] | None, components: dict[str, Any], device: torch.device,
    args: argparse.Namespace,
) -> Runner:
    """The runner of ``variant``: a "-graphs" variant wraps its setting's runner in CUDA graphs."""
    from gen3d.stages.text_to_image import graph_pipeline_, ungraph_pipeline_

    base = variant.removesuffix("-graphs")
    if previous is not None:
        ungraph_pipeline_(previous[1].pipe)
        torch.cuda.empty_cache()
    if previous is not None and previous[0].removesuffix("-graphs") == base:
        runner = previous[1]
    elif base == "default":
        runner = default_runner(components, device, args)
    else:
        # Quantisation is idempotent, so a row works when the rows before it were skipped.
        runner = our_runner(base, components, device, args)
    if variant.endswith("-graphs"):
        graph_pipeline_(runner.pipe)
    return runner


def main() -> None:
    args = parse_args()
    from gen3d.devices import CAPPED_ALLOCATOR_ENV, resolve_device

    if args.memory_gib is not None or args.memory_fraction is not None:
        # Read when CUDA initialises, which has not happened yet in this process.
        os.environ.update({**CAPPED_ALLOCATOR_ENV, **os.environ})
    from gen3d.models.flux.components import build_components

    device = resolve_device(args.device)
    out = Path(args.out)
    rows = load_rows(out / "bench_flux.json", args.fresh)
    done = {row_key(r) for r in rows}
    meta = environment(device, args)
    print(f"device: {meta['device']}; torch {meta['torch']}; diffusers {meta['diffusers']}; {meta['weights']}")

    start = time.perf_counter()
    torch.cuda.set_device(device)
    components = build_components("full", device, torch.bfloat16)
    print(f"built full-size random FLUX.1-schnell in {time.perf_counter() - start:.1f} s, "
          f"{torch.cuda.memory_allocated(device) / 2**30:.1f} GiB allocated", flush=True)

    previous: tuple[str, Runner] | None = None
    for variant in args.variants:
        todo = [(size, steps) for size in args.sizes for steps in args.steps if (variant, size, steps) not in done]
        if not todo:
            print(f"{variant}: all rows already in {out}, skipped")
            continue
        runner = runner_for(variant, previous, components, device, args)
        previous = (variant, runner)
        if setting(variant)[0]:
            apply_memory_cap(device, args)
        for size, steps in todo:
            row: dict[str, Any] = {"variant": variant, "size": size, "steps": steps}
            try:
                row.update(measure_row(runner, size, steps, device, args))
                print(f"{variant:18s} {size:5d}px {steps} steps: median {row['median_s']:.3f} s, "
                      f"peak {row['peak_allocated_gib']:.2f} GiB, encode {row.get('encode_s', 0):.3f} s, "
                      f"decode {row.get('decode_s', 0):.3f} s", flush=True)
            # A failed row (OOM under the cap, a compile or capture error) is recorded and the next row still runs.
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"
                print(f"{variant:18s} {size:5d}px {steps} steps: FAILED {row['error'][:200]}", flush=True)
                torch.cuda.empty_cache()
            rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
            write_results(out, meta, rows)
    write_results(out, meta, rows)
    print((out / "bench_flux.md").read_text())


if __name__ == "__main__":
    main()
