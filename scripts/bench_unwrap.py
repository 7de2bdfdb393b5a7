"""Our unwrapper (gen3d.mesh.unwrap) against xatlas: time, atlas usage and render PSNR of the bake.

Both atlases are baked by the same ``bake_texture`` from the same planted colour field at the same
texture size, then rendered from the validators' 16 cameras with point-sampled (non-mipmapped)
texture lookups and compared with the exact colour field at each pixel's surface point (found by
rendering positions as colours), so the PSNR measures only how well the atlas holds the field.
``--device`` is where both bakes run and where ours unwraps (xatlas is CPU only).

xatlas is not a gen3d dependency; install it for this comparison with
``.venv/bin/pip install xatlas==0.0.11``.

Usage: python -m scripts.bench_unwrap [--faces 30000 20000 10000] [--texture-size 1024]
       [--shape blob|mug] [--render-size 256] [--device cpu|cuda] [--repeats 3] [--clock wall|process]
"""

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gen3d.mesh.bake import bake_texture
from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.planted import (
    BOX_RADIUS,
    COLOR_FIELDS,
    blob_field,
    mug_field,
    planted_mesh,
)
from gen3d.mesh.unwrap import DEFAULT_GUTTER, unwrap
from gen3d.orientation import from_y_up, to_y_up
from gen3d.results import MeshAsset, TexturedMesh, UVMesh
from gen3d.splat.render import (
    psnr,
    render_mesh,
    render_textured_mesh,
    validator_cameras,
)

SHAPES = {"blob": blob_field, "mug": mug_field}


#: Clocks a ``Timer`` can read: wall time, or this process's CPU time, which a busy shared machine
#: disturbs far less (``main`` then pins torch to one thread, so it reads single-core seconds).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


@dataclass(frozen=True)
class Timer:
    """Times a call as the fastest of ``repeats`` runs after one warm-up (CUDA-synchronised)."""

    repeats: int
    clock: str = "wall"

    def __call__(self, fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
        """(seconds, last result) of ``fn``."""
        read = CLOCKS[self.clock]
        result = fn()
        times = []
        for _ in range(self.repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = read()
            result = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(read() - start)
        return min(times), result


def timer_from(args: argparse.Namespace) -> Timer:
    """The ``Timer`` of ``--repeats`` and ``--clock``; the process clock pins torch to one thread."""
    if args.clock == "process":
        torch.set_num_threads(1)
    return Timer(args.repeats, args.clock)


def xatlas_unwrap(mesh: MeshAsset, texture_size: int, gutter: int = DEFAULT_GUTTER) -> UVMesh:
    """xatlas.parametrize with our gutter and atlas size, as a ``UVMesh``."""
    try:
        import xatlas
    except ImportError as error:
        raise SystemExit("xatlas is needed for the comparison: .venv/bin/pip install xatlas==0.0.11") from error
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices, mesh.faces)
    options = xatlas.PackOptions()
    options.resolution, options.padding, options.bilinear = texture_size, gutter // 2, True
    atlas.generate(pack_options=options)
    source, faces, uvs = atlas[0]
    return UVMesh(mesh.vertices[source], faces.astype(np.int64), uvs.astype(np.float32), texture_size)


def uv_usage(uv_mesh: UVMesh) -> float:
    """Share of the atlas covered by UV triangles."""
    tri = uv_mesh.uvs[uv_mesh.faces].astype(np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return float(np.abs(0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])).sum())


def truth_psnr(textured: TexturedMesh, color_fn: Callable[[torch.Tensor], torch.Tensor], render_size: int) -> float:
    """Mean PSNR over the 16 validator views of the textured render against the exact field.

    The mesh is placed +Y up at TripoSR's scale; positions rendered as colours (scaled into
    [0, 1]) give each pixel's surface point, where ``color_fn`` is evaluated in the model frame.
    """
    vertices = to_y_up(textured.vertices)
    encoded = vertices / (2.0 * BOX_RADIUS) + 0.5
    scores = []
    for camera in validator_cameras(16, render_size):
        position = render_mesh(vertices, textured.faces, encoded, camera)
        mask = position.alpha > 0.5
        points = from_y_up(((position.rgb[mask] - 0.5) * 2.0 * BOX_RADIUS).astype(np.float32))
        truth = np.zeros_like(position.rgb)
        truth[mask] = color_fn(torch.from_numpy(points)).numpy()
        image = render_textured_mesh(vertices, textured.faces, textured.uvs, textured.texture, camera, mipmaps=False)
        scores.append(psnr(image.rgb, truth, mask=mask & (image.alpha > 0.5)))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[30000, 20000, 10000])
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="blob")
    parser.add_argument("--field", choices=sorted(COLOR_FIELDS), default="checker")
    parser.add_argument("--resolution", type=int, default=256, help="marching grid of the source mesh")
    parser.add_argument("--render-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    timer = timer_from(args)
    color_fn = COLOR_FIELDS[args.field]
    source = clean(planted_mesh(SHAPES[args.shape], args.resolution))
    print(f"{args.shape}: {len(source.faces)} faces at resolution {args.resolution}; {args.field} field, "
          f"{args.texture_size}^2 atlas, bake on {args.device}")  # fmt: skip
    print("| faces | unwrapper | unwrap s | atlas usage | bake s | PSNR dB |")
    print("|---|---|---|---|---|---|")
    for faces in args.faces:
        mesh = clean(decimate(source, faces))
        ours = ("ours", lambda m, size: unwrap(m, size, device=args.device))
        for name, method in (ours, ("xatlas", xatlas_unwrap)):
            seconds, uv_mesh = timer(lambda m=method: m(mesh, args.texture_size), args.device)
            bake_s, textured = timer(lambda u=uv_mesh: bake_texture(u, color_fn, args.device), args.device)
            score = truth_psnr(textured, color_fn, args.render_size)
            print(f"| {faces} | {name} | {seconds:.3f} | {uv_usage(uv_mesh):.3f} | {bake_s:.3f} | {score:.2f} |")


if __name__ == "__main__":
    main()
