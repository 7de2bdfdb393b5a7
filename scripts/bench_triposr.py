"""Benchmark our TripoSR on a GPU: full-size random weights, fp32 / bf16 / fp16, vs the reference procedure.

Measured with random weights: the scene-code timing uses the random network as is; for the mesh
the decoder and scene code are planted (gen3d.models.triposr.planted) so the surface is a sphere of
radius 0.5, because random weights give an arbitrary surface at threshold 25. The work done is
the same as for a real object (R^3 field, marching, vertex colours); only the surface differs.

Usage: python scripts/bench_triposr.py [--out DIR] [--repeats 5] [--resolution 256]
"""

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gen3d.devices import TORCH_DTYPES
from gen3d.models.triposr import TripoSR, TripoSRConfig
from gen3d.models.triposr.planted import plant_sphere

REFERENCE_CHUNK = 8192
GIB = 2**30


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs (CUDA-synchronised)."""
    result = None
    for _ in range(warmup):
        result = fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_gib(fn: Callable[[], Any]) -> float:
    """Peak allocated GiB while running ``fn`` (weights included)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


def reference_mesh(model: TripoSR, code: torch.Tensor, resolution: int, threshold: float) -> int:
    """The reference procedure: 8192-point field queries on the grid, CPU marching cubes, colours."""
    from skimage.measure import marching_cubes

    axis = torch.linspace(0, 1, resolution, device="cuda") * 1.74 - 0.87
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    density = model.query(code, points, chunk=REFERENCE_CHUNK)["density_act"].reshape((resolution,) * 3)
    verts, faces, _, _ = marching_cubes((density - threshold).cpu().numpy(), 0.0)
    verts = torch.from_numpy(verts.copy()).float().cuda() / (resolution - 1) * 1.74 - 0.87
    model.query(code, verts, chunk=REFERENCE_CHUNK)
    return int(faces.shape[0])


def bench_dtype(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Scene code, mesh and memory for one dtype, on a freshly built model."""
    torch.manual_seed(0)
    model = TripoSR.from_config(TripoSRConfig.official(), dtype=TORCH_DTYPES[name], device="cuda")
    weights_gib = torch.cuda.memory_allocated() / GIB
    images = torch.rand(1, 512, 512, 3, device="cuda")
    with torch.inference_mode():
        code_s, codes = timed(lambda: model(images), args.repeats)
        code_peak = peak_gib(lambda: model(images))
        if codes.shape != (1, 3, 40, 64, 64):
            raise RuntimeError(f"unexpected scene code shape {tuple(codes.shape)}")
        planted = plant_sphere(model, steepness=6.0, plane_size=64)
        mesh_fn = lambda: model.extract_mesh(planted, args.resolution, args.threshold, args.chunk)  # noqa: E731
        mesh_s, mesh = timed(mesh_fn, args.repeats)
        mesh_peak = peak_gib(mesh_fn)
    row = {
        "dtype": name,
        "scene_code_ms": code_s * 1e3,
        "mesh_ms": mesh_s * 1e3,
        "weights_gib": weights_gib,
        "peak_scene_code_gib": code_peak,
        "peak_mesh_gib": mesh_peak,
        "vertices": int(mesh.vertices.shape[0]),
        "faces": int(mesh.faces.shape[0]),
    }
    if name == "fp32" and args.reference_repeats > 0:
        with torch.inference_mode():
            ref_s, ref_faces = timed(
                lambda: reference_mesh(model, planted, args.resolution, args.threshold), args.reference_repeats, warmup=1
            )
        row["reference_mesh_ms"] = ref_s * 1e3
        row["reference_faces"] = ref_faces
    del model
    torch.cuda.empty_cache()
    return row


def to_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# TripoSR benchmark ({meta['device']}, measured with random weights)",
        "",
        f"Mesh: resolution {meta['resolution']}, threshold {meta['threshold']}, planted sphere r=0.5 "
        f"(random weights give no meaningful surface), vertex colours included. Median of {meta['repeats']}.",
        "",
        "| dtype | image->scene code ms | mesh ms | reference mesh ms (8192 chunks + skimage) | weights GiB | peak scene code GiB | peak mesh GiB | faces |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = f"{r['reference_mesh_ms']:.0f}" if "reference_mesh_ms" in r else "-"
        lines.append(
            f"| {r['dtype']} | {r['scene_code_ms']:.1f} | {r['mesh_ms']:.1f} | {ref} | {r['weights_gib']:.2f} | "
            f"{r['peak_scene_code_gib']:.2f} | {r['peak_mesh_gib']:.2f} | {r['faces']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "./out"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=5, help="0 skips the slow reference procedure")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=25.0)
    parser.add_argument("--chunk", type=int, default=2**21)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"], choices=sorted(TORCH_DTYPES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_triposr needs a CUDA device")

    rows = [bench_dtype(name, args) for name in args.dtypes]
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "resolution": args.resolution,
        "threshold": args.threshold,
        "repeats": args.repeats,
        "chunk": args.chunk,
        "weights": "random (full size); mesh field planted as a sphere",
    }
    markdown = to_markdown(rows, meta)
    print(markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_triposr.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "bench_triposr.md").write_text(markdown)


if __name__ == "__main__":
    main()
