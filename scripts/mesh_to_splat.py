"""Convert any trimesh-readable mesh into a validator-ready Gaussian-splat PLY and check it.

Input orientation (``--input-up``):
    * GLB/glTF input is +Y up with the front toward +Z by the glTF convention, always.
    * Other formats default to ``y`` as well (what most DCC tools and our own exports write);
      ``-y`` is the 3DGS/404-gen-subnet convention, ``z`` means already in gen3d's model frame
      (z up, front toward +x, e.g. raw TripoSR output).
Colours: vertex colours when the file has them, else colours trimesh derives from a texture or
material, else grey.

    python scripts/mesh_to_splat.py chair.glb chair_splat.ply --up +y --count 32768
"""

import argparse
import time
from pathlib import Path

import numpy as np
import trimesh

from gen3d.config import ExportConfig
from gen3d.orientation import FLIP_ABOUT_X, Y_UP_FROM_MODEL, rotate_points
from gen3d.results import MeshAsset
from gen3d.splat.validate import DEFAULT_SPLAT_COUNT, MIN_SPLAT_COUNT, validate_splat
from gen3d.stages.export import Exporter

#: input up-axis -> rotation from the file's frame to the model frame (z up, front +x)
TO_MODEL = {"y": Y_UP_FROM_MODEL.T, "-y": Y_UP_FROM_MODEL.T @ FLIP_ABOUT_X, "z": np.eye(3)}
_GREY = 128


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("in_mesh", type=Path)
    parser.add_argument("out_ply", type=Path)
    parser.add_argument("--up", choices=["+y", "-y"], default="+y", help="up-axis convention of the splat")
    parser.add_argument("--count", type=int, default=DEFAULT_SPLAT_COUNT, help=f"gaussians to sample (>= {MIN_SPLAT_COUNT} for validators)")
    parser.add_argument("--input-up", choices=sorted(TO_MODEL), default="y",
                        help="up axis of a non-glTF input (glTF is always y)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    """(V, 3) uint8 colours: vertex colours, texture/material colours resolved per vertex, or grey."""
    visual = mesh.visual
    if visual.kind == "texture":
        visual = visual.to_color()
    if visual.kind in {"vertex", "face"}:
        return np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
    return np.full((len(mesh.vertices), 3), _GREY, dtype=np.uint8)


def load_model_frame(path: Path, input_up: str) -> MeshAsset:
    """Read ``path`` as one mesh and rotate it into gen3d's model frame."""
    mesh = trimesh.load(path, force="mesh")
    is_gltf = path.suffix.lower() in {".glb", ".gltf"}
    rotation = TO_MODEL["y" if is_gltf else input_up]
    return MeshAsset(
        vertices=rotate_points(np.asarray(mesh.vertices, dtype=np.float32), rotation),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        vertex_colors=vertex_colors(mesh),
    )


def main() -> None:
    args = parse_args()
    mesh = load_model_frame(args.in_mesh, args.input_up)
    exporter = Exporter.from_config(ExportConfig(splat_count=max(args.count, MIN_SPLAT_COUNT)))
    if args.count < MIN_SPLAT_COUNT:
        print(f"--count {args.count} raised to {MIN_SPLAT_COUNT} (validators reject fewer gaussians)")
    start = time.perf_counter()
    exported = exporter.export(mesh, "splat", up=args.up, mesh=None)  # a splat takes no mesh options
    seconds = time.perf_counter() - start
    args.out_ply.write_bytes(exported.data)
    print(f"wrote {args.out_ply} ({len(exported.data) / 1e6:.2f} MB, {seconds:.2f} s)")
    print(validate_splat(exported.data).summary())


if __name__ == "__main__":
    main()
