"""Whole ``extract_mesh`` with the official-size decoder, on any device: the marching call, the
whole call, faces and the vertex-colour GLB's size, per marching resolution.

The field is the planted sphere of radius 0.5 (``gen3d.models.triposr.planted.plant_sphere``): random
weights give no surface at threshold 25. Only the decoder is built (the rest stays on the meta
device), since meshing never runs the transformer. Times are the best of ``--repeats`` runs after
one warm-up; the first marching call also builds the case table, which the warm-up absorbs.

Usage: python -m scripts.bench_extract [--device cpu] [--resolutions 128 256] [--repeats 3]
"""

import argparse
from functools import partial

import torch

from gen3d.mesh.isosurface import marching_cubes
from gen3d.models.triposr import TripoSR, TripoSRConfig, mesh_to_trimesh
from gen3d.models.triposr.planted import plant_sphere
from scripts.bench_unwrap import Timer

THRESHOLD = 25.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model = TripoSR.from_config(TripoSRConfig.official(), device="meta")
    model.decoder.to_empty(device=args.device)
    code = plant_sphere(model, steepness=6.0)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| resolution | faces | marching call | whole extract_mesh | GLB |")
    print("|---|---:|---:|---:|---:|")
    timer = Timer(args.repeats)
    for resolution in args.resolutions:
        density = model.density_grid(code, resolution)
        march_s, _ = timer(partial(marching_cubes, density, THRESHOLD), args.device)
        whole_s, mesh = timer(partial(model.extract_mesh, code, resolution, THRESHOLD), args.device)
        glb = mesh_to_trimesh(mesh).export(file_type="glb")
        print(f"| {resolution}³ | {len(mesh.faces):,} | {march_s:.3f} s | {whole_s:.2f} s | {len(glb) / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
