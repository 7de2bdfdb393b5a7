"""Mesh-vs-splat agreement in the validators' views, and an upright check of hamburger.ply.

For each procedural solid (sphere, box, torus, l_shape, ring) and splat count, renders the mesh
and its exported "+y" splat with the validators' cameras and reports mean/min silhouette IoU,
colour PSNR over the mesh's pixels and the PLY size. Then renders the reference hamburger.ply
as written (+Y up) and turned 180° about X, compares their silhouette tapers (a bun dome on top
narrows the silhouette upward) and saves both as PNG strips.

Writes ``agreement.json``, ``agreement.md`` and PNGs to ``--out`` (default $OUT or ./out).

    python scripts/splat_agreement.py --counts 8192 16384 32768 65536 --views 16 --size 518
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from gen3d.orientation import FLIP_ABOUT_X, rotate_gaussians
from gen3d.splat.agreement import measure_agreement, procedural_solids
from gen3d.splat.ply import read_splat_ply
from gen3d.splat.render import (
    render_splat,
    silhouette_taper,
    validator_cameras,
    validator_scene,
)

HAMBURGER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hamburger.ply"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[8192, 16384, 32768, 65536])
    parser.add_argument("--views", type=int, default=16, help="validator cameras (16 as the validators)")
    parser.add_argument("--size", type=int, default=518, help="image side in pixels (518 as the validators)")
    parser.add_argument("--solids", nargs="+", default=None, help="subset of the procedural solids")
    parser.add_argument("--hamburger", type=Path, default=HAMBURGER)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    return parser.parse_args()


def agreement_rows(args: argparse.Namespace) -> list[dict]:
    """One row per (solid, count) with IoU, PSNR, size and export seconds."""
    cameras = validator_cameras(args.views, args.size)
    solids = procedural_solids()
    rows = []
    for name in args.solids or list(solids):
        for count in args.counts:
            result = measure_agreement(solids[name], count, cameras)
            rows.append(
                {
                    "solid": name,
                    "count": count,
                    "mean_iou": result.mean_iou,
                    "min_iou": min(result.iou),
                    "mean_psnr_db": result.mean_psnr,
                    "file_mb": result.file_bytes / 1e6,
                    "export_s": result.seconds,
                }
            )
            print(f"{name:8s} {count:6d}  IoU {result.mean_iou:.4f} (min {min(result.iou):.4f})  "
                  f"PSNR {result.mean_psnr:5.2f} dB  {result.file_bytes / 1e6:.2f} MB", flush=True)  # fmt: skip
    return rows


def hamburger_check(path: Path, views: int, size: int, out: Path) -> dict:
    """Silhouette tapers of hamburger.ply as written and flipped; saves one PNG strip each."""
    written = read_splat_ply(path)
    cameras = validator_cameras(views, size)
    result = {}
    for label, splat in (("as_written", written), ("flipped", rotate_gaussians(written, FLIP_ABOUT_X))):
        scene = validator_scene(splat)
        renders = [render_splat(scene, camera) for camera in cameras]
        result[label] = [silhouette_taper(r.alpha) for r in renders]
        strip = np.concatenate([r.rgb for r in renders[:: max(1, views // 4)]], axis=1)
        Image.fromarray(np.round(strip * 255).astype(np.uint8)).save(out / f"hamburger_{label}.png")
    result["upright"] = bool(np.mean(result["as_written"]) < np.mean(result["flipped"]))
    return result


def write_markdown(rows: list[dict], burger: dict, args: argparse.Namespace, path: Path) -> None:
    lines = [
        f"# Splat vs mesh agreement ({args.views} validator views, {args.size} px)",
        "",
        "Silhouette IoU (coverage > 0.5), colour PSNR over mesh pixels, splat PLY size.",
        "",
        "| solid | count | mean IoU | min IoU | PSNR (dB) | file (MB) | export (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['solid']} | {r['count']} | {r['mean_iou']:.4f} | {r['min_iou']:.4f} | "
            f"{r['mean_psnr_db']:.2f} | {r['file_mb']:.2f} | {r['export_s']:.2f} |"
        )
    lines += [
        "",
        "## hamburger.ply (+Y up as written)",
        "",
        f"Mean silhouette taper (top width / bottom width): as written "
        f"{np.mean(burger['as_written']):.3f}, flipped {np.mean(burger['flipped']):.3f}; "
        f"upright: **{burger['upright']}**. Renders: hamburger_as_written.png, hamburger_flipped.png.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = agreement_rows(args)
    burger = hamburger_check(args.hamburger, args.views, args.size, args.out)
    print(f"hamburger upright: {burger['upright']}")
    settings = {"views": args.views, "size": args.size, "counts": args.counts}
    report = {"settings": settings, "rows": rows, "hamburger": burger}
    (args.out / "agreement.json").write_text(json.dumps(report, indent=2))
    write_markdown(rows, burger, args, args.out / "agreement.md")


if __name__ == "__main__":
    main()
