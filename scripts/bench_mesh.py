"""Mesh path benchmark: decimation libraries, marching grid per face target, textured path, file sizes.

Tables 1-3 on a planted surface (``--shape``: the bumpy blob has ~200k faces at resolution 256,
like ``extract_mesh``; the mug adds thin walls and a handle), table 4 on the blob:
1. decimation: ``fast-simplification`` (shipped) vs ``pyfqmr`` (``pip install pyfqmr==0.5.0``),
   seconds and Chamfer distance to the full mesh (% of the extent), per face target;
2. marching grid: marching-cubes seconds (on ``--device``), source faces, ``simplify`` seconds
   and Chamfer to the resolution-256 mesh, per resolution and face target;
3. textured path per face target: simplify, unwrap, bake (on ``--device``), GLB writing and
   sizes with PNG and JPEG textures, JPEG's texture PSNR against PNG, and the vertex-colour GLB;
4. Taubin smoothing after decimation to 20k faces, on the blob's field made steep by
   ``tanh(k * field)`` (k = 2000 steps within a tenth of a cell: terraced like a thresholded
   density): mean distance to the true surface, vertex-normal error, silhouette IoU against a
   resolution-384 mesh of the true field on 8 of the validators' views.

Times are the best of ``--repeats`` runs after a warm-up (CUDA-synchronised on a GPU), in wall
seconds or, with ``--clock process``, in single-thread CPU seconds (steadier on a busy machine).

Usage: python -m scripts.bench_mesh [--device cuda] [--faces 30000 20000 10000]
       [--resolutions 128 160 192 256] [--texture-size 1024] [--repeats 3] [--clock wall|process]
"""

import argparse
import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from gen3d.mesh.bake import bake_texture
from gen3d.mesh.decimate import decimate
from gen3d.mesh.files import (
    encode_texture,
    write_textured_mesh,
    write_vertex_color_mesh,
)
from gen3d.mesh.metrics import chamfer_distance, extent, sample_surface
from gen3d.mesh.normalize import to_file_frame, vertex_normals
from gen3d.mesh.planted import blob_field, checker, planted_mesh
from gen3d.mesh.prepare import simplify
from gen3d.mesh.unwrap import unwrap
from gen3d.results import MeshAsset
from gen3d.splat.render import psnr, render_mesh, silhouette_iou, validator_cameras
from scripts.bench_unwrap import CLOCKS, SHAPES, Timer, timer_from


def chamfer_percent(reference: MeshAsset, mesh: MeshAsset) -> float:
    """Chamfer distance between two meshes as a percentage of the reference's extent."""
    error = chamfer_distance((reference.vertices, reference.faces), (mesh.vertices, mesh.faces), samples=30_000)
    return 100.0 * error / extent(reference.vertices)


def pyfqmr_decimate(mesh: MeshAsset, target_faces: int) -> MeshAsset:
    """pyfqmr's quadric decimation (geometry only) with fast-simplification's settings."""
    try:
        import pyfqmr
    except ImportError as error:
        raise SystemExit("pyfqmr is needed for the comparison: .venv/bin/pip install pyfqmr==0.5.0") from error
    simplifier = pyfqmr.Simplify()
    simplifier.setMesh(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int32))
    simplifier.simplify_mesh(target_count=target_faces, aggressiveness=7.0, preserve_border=False, verbose=False)
    vertices, faces, _ = simplifier.getMesh()
    return MeshAsset(vertices.astype(np.float32), faces.astype(np.int64), np.zeros((len(vertices), 3), np.uint8))


def decimation_table(source: MeshAsset, targets: list[int], timer: Timer) -> None:
    print("\n| faces | fast-simplification s | Chamfer % | pyfqmr s | Chamfer % |\n|---|---|---|---|---|")
    for target in targets:
        ours_s, ours = timer(lambda t=target: decimate(source, t))
        theirs_s, theirs = timer(lambda t=target: pyfqmr_decimate(source, t))
        print(f"| {target} | {ours_s:.3f} | {chamfer_percent(source, ours):.4f} | {theirs_s:.3f} | "
              f"{chamfer_percent(source, theirs):.4f} |")  # fmt: skip


def resolution_table(reference: MeshAsset, field: Callable[[torch.Tensor], torch.Tensor], resolutions: list[int],
                     targets: list[int], device: str, timer: Timer) -> None:  # fmt: skip
    print("\n| grid | marching s | source faces | faces | simplify s | Chamfer % vs 256 |\n|---|---|---|---|---|---|")
    for resolution in resolutions:
        march_s, source = timer(lambda r=resolution: planted_mesh(field, r, device=device), device)
        for target in targets:
            simple_s, simple = timer(lambda t=target: simplify(source, t))
            print(f"| {resolution} | {march_s:.3f} | {len(source.faces)} | {len(simple.faces)} | {simple_s:.3f} | "
                  f"{chamfer_percent(reference, simple):.4f} |")  # fmt: skip


def textured_table(source: MeshAsset, targets: list[int], texture_size: int, device: str, timer: Timer) -> None:
    print("\n| faces | simplify s | unwrap s | bake s | GLB PNG s | KB | GLB JPEG s | KB | total s (JPEG) "
          "| JPEG PSNR dB | vertex GLB KB |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for target in targets:
        simple_s, simple = timer(lambda t=target: simplify(source, t))
        unwrap_s, uv_mesh = timer(lambda m=simple: unwrap(m, texture_size, device=device), device)
        bake_s, textured = timer(lambda u=uv_mesh: bake_texture(u, checker, device), device)
        png_s, png = timer(lambda m=textured: write_textured_mesh(m, "glb", "png"))
        jpeg_s, jpeg = timer(lambda m=textured: write_textured_mesh(m, "glb", "jpeg"))
        decoded = np.asarray(Image.open(io.BytesIO(encode_texture(textured.texture, "jpeg")))) / 255.0
        jpeg_db = psnr(decoded, textured.texture / 255.0)
        vertex_kb = len(write_vertex_color_mesh(simple, "glb")) / 1024
        sizes = f"{png_s:.3f} | {len(png) / 1024:.0f} | {jpeg_s:.3f} | {len(jpeg) / 1024:.0f}"
        total = simple_s + unwrap_s + bake_s + jpeg_s
        print(f"| {len(simple.faces)} | {simple_s:.3f} | {unwrap_s:.3f} | {bake_s:.3f} | {sizes} | {total:.3f} | "
              f"{jpeg_db:.1f} | {vertex_kb:.0f} |")  # fmt: skip


def surface_errors(mesh: MeshAsset) -> tuple[float, float]:
    """Mean distance of surface samples to the blob's true surface, and mean vertex-normal error (°)."""
    samples = torch.from_numpy(sample_surface(mesh.vertices, mesh.faces, 100_000)).float()
    points = torch.from_numpy(mesh.vertices).requires_grad_(True)
    (gradient,) = torch.autograd.grad(blob_field(points).sum(), points)
    truth = -torch.nn.functional.normalize(gradient, dim=1).numpy()  # the field grows inward
    cosine = np.clip(np.einsum("vd,vd->v", vertex_normals(mesh.vertices, mesh.faces), truth), -1.0, 1.0)
    return float(blob_field(samples).abs().mean()), float(np.degrees(np.arccos(cosine)).mean())


def silhouettes(mesh: MeshAsset) -> list[np.ndarray]:
    placed = to_file_frame(mesh, normalize=False)
    grey = np.zeros((len(placed.vertices), 3))
    return [render_mesh(placed.vertices, placed.faces, grey, c).alpha for c in validator_cameras(16, 256)[::2]]


def smoothing_table(timer: Timer) -> None:
    print("\n| k | Taubin pairs | simplify s | distance | normal error ° | IoU vs truth |\n|---|---|---|---|---|---|")
    truth = silhouettes(planted_mesh(blob_field, 384))
    for steepness in (50.0, 2000.0):
        source = planted_mesh(lambda p, k=steepness: torch.tanh(k * blob_field(p)), 256)
        for pairs in (0, 5):
            seconds, mesh = timer(lambda n=pairs: simplify(source, 20_000, smooth_iterations=n))
            distance, normal = surface_errors(mesh)
            iou = np.mean([silhouette_iou(a, b) for a, b in zip(silhouettes(mesh), truth)])
            print(f"| {steepness:.0f} | {pairs} | {seconds:.3f} | {distance:.6f} | {normal:.2f} | {iou:.5f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, nargs="+", default=[30000, 20000, 10000])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 160, 192, 256])
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="blob", help="source of tables 1-3")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["decimation", "resolution", "textured", "smoothing"])  # fmt: skip
    args = parser.parse_args()
    timer = timer_from(args)
    field = SHAPES[args.shape]
    source = planted_mesh(field, 256, checker, device=args.device)
    print(f"{args.shape} at resolution 256: {len(source.faces)} faces; device {args.device}; best of {args.repeats}")
    if "decimation" not in args.skip:
        decimation_table(source, args.faces, timer)
    if "resolution" not in args.skip:
        resolution_table(source, field, args.resolutions, args.faces, args.device, timer)
    if "textured" not in args.skip:
        textured_table(source, args.faces, args.texture_size, args.device, timer)
    if "smoothing" not in args.skip:
        smoothing_table(timer)


if __name__ == "__main__":
    main()
