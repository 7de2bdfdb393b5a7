"""One-pass against chunked decimation (``gen3d.mesh.decimate_chunks``) on large meshes, to 20k faces.

Meshes: the bumpy blob at grid 256 (TripoSR-sized, ~207k faces) and, with ``--trellis``, the raw
mesh of the full-size random TRELLIS stage (``quality_random``, one step per flow, the planted
sphere shell: 364k faces; about 4 minutes on a 2-core CPU in fp32, seconds on a GPU).
Per mesh: median seconds of ``--repeats`` runs after a warm-up, the Chamfer distance to the full
mesh (% of its extent), and edges used by one face (open) or by more than two.

Usage: python -m scripts.bench_decimate_chunks [--trellis] [--device cpu|cuda] [--workers 2 8]
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from gen3d.config import load_preset
from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.decimate_chunks import ChunkedDecimator
from gen3d.mesh.metrics import chamfer_distance, edge_uses, extent
from gen3d.mesh.planted import bumpy_blob
from gen3d.results import MeshAsset
from gen3d.stages.image_to_3d import (
    FlowOptions,
    ShapeRequest,
    build_image_to_3d,
    warm_up_image,
)

TARGET = 20_000


def trellis_mesh(device: str) -> MeshAsset:
    """The raw FlexiCubes mesh of the full-size random TRELLIS stage (eager; fp32 on a CPU)."""
    cfg = load_preset("quality_random").image_to_3d
    eager = cfg.trellis.model_copy(update={"compile": False, "cuda_graphs": False})
    precision = "fp32" if device == "cpu" else cfg.precision
    stage = build_image_to_3d(cfg.model_copy(update={"device": device, "precision": precision, "trellis": eager}))
    request = ShapeRequest("mesh", 0, keep_color_field=True, flow=FlowOptions(ss_steps=1, slat_steps=1))
    return stage.generate(warm_up_image(stage.cond_size, backdrop=0), request).mesh


def median_seconds(run: Callable[[], MeshAsset], repeats: int) -> tuple[float, MeshAsset]:
    """Median wall seconds of ``repeats`` runs after one warm-up, and the last result."""
    result = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def edge_defects(faces: np.ndarray) -> tuple[int, int]:
    """Edges used by one face, and by more than two."""
    uses = edge_uses(faces)
    return int((uses == 1).sum()), int((uses > 2).sum())


def rows(name: str, mesh: MeshAsset, workers: list[int], repeats: int) -> list[str]:
    """Table rows of one mesh: one pass, then chunked on each worker count."""
    source, size = (mesh.vertices, mesh.faces), extent(mesh.vertices)
    runners: list[tuple[str, Callable[[MeshAsset, int], MeshAsset]]] = [("one pass", decimate)]
    pools = [ChunkedDecimator(count, 0) for count in workers]
    runners += [(f"chunked, {pool.workers} workers", pool) for pool in pools]
    lines = []
    try:
        for label, decimator in runners:
            seconds, result = median_seconds(lambda d=decimator: d(mesh, TARGET), repeats)
            chamfer = 100.0 * chamfer_distance(source, (result.vertices, result.faces)) / size
            open_edges, crowded = edge_defects(result.faces)
            lines.append(f"| {name} | {len(mesh.faces):,} | {label} | {seconds:.3f} s | {chamfer:.4f} % | {open_edges} | {crowded} |")
    finally:
        for pool in pools:
            pool.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trellis", action="store_true", help="also the full-size random TRELLIS mesh")
    parser.add_argument("--device", default="cpu", help="where the TRELLIS stage runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    meshes = {"bumpy blob, grid 256": clean(bumpy_blob(256))}
    if args.trellis:
        meshes["TRELLIS planted, full-size random"] = trellis_mesh(args.device)
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} after a warm-up; target {TARGET:,} faces")
    print("| mesh | faces | decimation | seconds | Chamfer | open edges | edges of > 2 faces |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, mesh in meshes.items():
        print("\n".join(rows(name, mesh, args.workers, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
