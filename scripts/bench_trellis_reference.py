"""Time the public TRELLIS reference pipeline beside ours on one GPU: same sizes, same planted shape.

    GEN3D_TRELLIS_REFERENCE=REF python -m scripts.bench_trellis_reference --out OUT [--steps 25,12] [--repeats 3]

``REF`` has the layout of ``tests/models/trellis/reference.py`` (``REFERENCE_LAYOUT``), except that
``REF/site`` holds spconv's CUDA build (``spconv-cu126==2.3.8``, ``cumm-cu126==0.7.11``, from PyPI)
and ``xformers``. ``--xformers stand-in`` runs the sparse attention through the parity tests'
per-segment SDPA instead of xformers; the report says which ran. (On the H100 box with torch 2.11,
PyPI's xformers 0.0.35 had no CUDA kernels -- "xFormers wasn't build with CUDA support" -- so the
stand-in ran there; BENCHMARKS.md says what that changes.)

Assembling ``REF`` on a GPU machine: the parity checkout's ``trellis/`` and ``dinov2/``, and
``pip install --no-deps --target REF/site spconv-cu126==2.3.8 cumm-cu126==0.7.11 pccm ccimport pybind11
fire lark portalocker requests easydict plyfile utils3d termcolor ninja xformers``.

**The reference** runs as its ``TrellisImageTo3DPipeline.run`` does, on an image already cut out
(``preprocess_image=False``): DINOv2 ViT-L/14-reg from the dinov2 hub code in fp32, both flows and
all decoders in fp16 as the release's checkpoint JSONs ask, spconv convolutions (``SPCONV_ALGO``
as the reference's default, ``auto``), dense attention through its own SDPA path, the sampler
constants of ``pipeline.json``. Its networks are built at the released sizes with random weights;
two decisions are planted exactly as our ``random`` mode plants them (``gen3d.models.trellis.planted``),
so both pipelines do the same work: the structure decoder's occupancy (the 20,032-voxel sphere
shell) and the mesh decoder's per-corner signed distances. It decodes a mesh and Gaussians, what
its GLB export needs.

**What cannot run here:** the reference's GLB export (``postprocessing_utils.to_glb``) renders 100
views with nvdiffrast and diff-gaussian-rasterization and optimises a texture for 2,500 steps;
neither extension installs without a CUDA build, and both are non-commercial. So the reference's
time here is its generation alone: a lower bound on its image -> GLB.

**Ours** in the same process: the ``quality_random`` stage (``fast``: compiled, graphed), its
image -> GLB request and its phases (``scripts/bench_trellis.py``). Writes
``OUT/bench_trellis_reference.json`` and ``.md``.
"""

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gen3d.models.trellis.config import TrellisConfig
from gen3d.models.trellis.mesh_extract import SDF_CHANNELS
from gen3d.models.trellis.planted import planted_corner_distance, planted_structure
from scripts.bench_flux import synchronised_timer, timed_methods

#: The reference pipeline's methods, timed as phases of ``run``.
PHASES = ("get_cond", "sample_sparse_structure", "sample_slat", "decode_slat")
#: ImageNet normalisation, what the reference's ``image_cond_model_transform`` applies.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The planted shape of our ``random`` mode.
PLANT = "sphere"


class PlantedOccupancy(torch.nn.Module):
    """The reference's structure decoder, run in full, whose occupancy is then the planted shell's."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(latent)
        coords = planted_structure(PLANT, logits.shape[-1], None).to(logits.device).long()
        planted = torch.full_like(logits, -1.0)
        planted[0, 0, coords[:, 1], coords[:, 2], coords[:, 3]] = 1.0
        return planted


class PlantedCornerDistance(torch.nn.Module):
    """The reference mesh decoder's output layer, whose SDF channels then hold the planted distances
    at the corners of its ``resolution``^3 grid (the decoder's resolution x 4, as in our pipeline)."""

    def __init__(self, layer: torch.nn.Module, resolution: int):
        super().__init__()
        self.layer = layer
        self.resolution = resolution

    def forward(self, h: Any) -> Any:
        out = self.layer(h)
        feats = out.feats.clone()
        feats[:, SDF_CHANNELS] = planted_corner_distance(PLANT, out.coords[:, 1:], self.resolution, None).to(feats.dtype)
        return out.replace(feats)


def stand_in_missing(name: str, attributes: dict[str, Any]) -> bool:
    """Register an empty module ``name`` when it cannot be imported here; the pipeline module imports
    torchvision (for one Normalize we set ourselves) and rembg (for the preprocessing we skip)."""
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        pass
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return True


def normalise(image: torch.Tensor) -> torch.Tensor:
    """The reference's ``image_cond_model_transform``: ImageNet mean and std per channel."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=image.device)[:, None, None]
    return (image - mean) / std


def reference_pipeline(ref: types.SimpleNamespace, cfg: TrellisConfig, device: torch.device) -> Any:
    """The reference's image-to-3D pipeline at ``cfg``'s sizes, random weights, the planted shape
    (``import_reference`` has run)."""
    from tests.models.trellis.reference import reference_dinov2

    stand_ins = [name for name in ("torchvision", "rembg") if stand_in_missing(name, {"transforms": None})]
    module = importlib.import_module("trellis.pipelines.trellis_image_to_3d")
    base = importlib.import_module("trellis.pipelines.base")
    models = {
        "sparse_structure_flow_model": ref.models.SparseStructureFlowModel(**cfg.sparse_structure_flow.to_reference_dict()),
        "sparse_structure_decoder": ref.models.SparseStructureDecoder(**cfg.sparse_structure_decoder.to_reference_dict()),
        "slat_flow_model": ref.models.SLatFlowModel(**cfg.slat_flow.to_reference_dict()),
        "slat_decoder_mesh": ref.models.SLatMeshDecoder(**cfg.mesh_decoder.to_reference_dict()),
        "slat_decoder_gs": ref.models.SLatGaussianDecoder(**cfg.gaussian_decoder.to_reference_dict()),
        "image_cond_model": reference_dinov2(cfg.conditioner),  # the hub's dinov2_vitl14_reg at cfg's sizes
    }
    models["sparse_structure_decoder"] = PlantedOccupancy(models["sparse_structure_decoder"])
    mesh_decoder = models["slat_decoder_mesh"]
    mesh_decoder.out_layer = PlantedCornerDistance(mesh_decoder.out_layer, cfg.mesh_decoder.resolution * 4)
    pipeline = module.TrellisImageTo3DPipeline()  # no models: returns before loading anything
    base.Pipeline.__init__(pipeline, {name: model.to(device) for name, model in models.items()})
    pipeline.image_cond_model_transform = normalise
    pipeline.sparse_structure_sampler = ref.samplers.FlowEulerGuidanceIntervalSampler(sigma_min=cfg.structure_sampler.sigma_min)
    pipeline.slat_sampler = ref.samplers.FlowEulerGuidanceIntervalSampler(sigma_min=cfg.latent_sampler.sigma_min)
    pipeline.sparse_structure_sampler_params = sampler_params(cfg.structure_sampler)
    pipeline.slat_sampler_params = sampler_params(cfg.latent_sampler)
    pipeline.slat_normalization = {"mean": list(cfg.slat_mean), "std": list(cfg.slat_std)}
    pipeline.stand_ins = stand_ins
    return pipeline


def sampler_params(sampler: Any) -> dict[str, Any]:
    """``pipeline.json``'s sampler ``params`` from our SamplerConfig of the same constants."""
    return {
        "steps": sampler.steps,
        "cfg_strength": sampler.cfg_strength,
        "cfg_interval": list(sampler.cfg_interval),
        "rescale_t": sampler.rescale_t,
    }


def reference_request(pipeline: Any, image: Image.Image, steps: int) -> dict[str, Any]:
    """One ``run`` (mesh and Gaussians) at ``steps`` Euler steps of both flows."""
    return pipeline.run(
        image, seed=0, formats=["mesh", "gaussian"], preprocess_image=False,
        sparse_structure_sampler_params={"steps": steps}, slat_sampler_params={"steps": steps},
    )  # fmt: skip


def bench_reference(pipeline: Any, steps_list: list[int], repeats: int, device: torch.device) -> list[dict[str, Any]]:
    """Median seconds of the reference's run and of each phase, per step count (after one warm run)."""
    # A flat image: with the planted shell, the input's content changes no shape and no FLOP.
    image = Image.new("RGB", (518, 518), (200, 60, 40))
    rows = []
    for steps in steps_list:
        first = time.perf_counter()
        outputs = reference_request(pipeline, image, steps)  # spconv's algorithm search, lazy init
        first_s = time.perf_counter() - first
        totals: list[float] = []
        timed_request = synchronised_timer(reference_request, device, totals)
        with timed_methods(pipeline, PHASES, device) as phases:
            for _ in range(repeats):
                outputs = timed_request(pipeline, image, steps)
        mesh = outputs["mesh"][0]
        row = {
            "pipeline": "reference",
            "steps": steps,
            "first_request_s": first_s,
            "generate_s": statistics.median(totals),
            "faces": int(mesh.faces.shape[0]),
            "gaussians": int(outputs["gaussian"][0].get_xyz.shape[0]),
        }
        row |= {f"phase_{name}": statistics.median(values) for name, values in phases.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(reference: list[dict[str, Any]], ours: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Per step count: the reference's generation against ours, phase by phase."""
    lines = [
        f"{meta['device']}, torch {meta['torch']}, random weights, planted 20,032-voxel shell; sparse attention: {meta['xformers']}.",
        "",
        "| pipeline | steps | condition | structure flow + decoder | latent flow | decoders (mesh + Gaussians) "
        "| generation (mesh + Gaussians) | image -> GLB | faces | Gaussians |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in reference:
        lines.append(
            f"| reference | {row['steps']} | {row['phase_get_cond']:.3f} | {row['phase_sample_sparse_structure']:.3f} "
            f"| {row['phase_sample_slat']:.3f} | {row['phase_decode_slat']:.3f} | **{row['generate_s']:.3f} s** "
            f"| not runnable (nvdiffrast, diff-gaussian-rasterization) | {row['faces']:,} | {row['gaussians']:,} |"
        )
    for row in ours:
        decoders = row.get("phase_decode_mesh", 0.0) + row.get("phase_decode_gaussians", 0.0)
        generation = row["generate"] + row.get("phase_decode_gaussians", 0.0)
        lines.append(
            f"| ours ({row['variant']}) | {row['steps']} | {row.get('phase_condition', 0):.3f} "
            f"| {row.get('phase_sample_structure', 0):.3f} | {row.get('phase_sample_latent', 0):.3f} | {decoders:.3f} "
            f"| **{generation:.3f} s** | {row['total']:.3f} s | {int(row['raw_faces']):,} | {row['gaussians']:,} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default="25,12", help="comma-separated Euler steps of both flows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xformers", choices=("real", "stand-in"), default="real", help="the sparse attention's xformers")
    parser.add_argument("--ours", default="fast", help="our variants to time in the same run (scripts/bench_trellis.py), or none")
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--texture-size", type=int, default=1024)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_trellis_reference times the reference on a CUDA GPU (its spconv CUDA build)")
    from tests.models.trellis.reference import import_reference, reference_root

    root = reference_root()
    if root is None:
        raise SystemExit("set GEN3D_TRELLIS_REFERENCE to the reference folder (see tests/models/trellis/reference.py)")
    os.environ.setdefault("SPCONV_ALGO", "auto")  # the reference's own default on a GPU
    ref = import_reference(root, xformers_stand_in=args.xformers == "stand-in")
    if args.xformers == "real":
        import xformers.ops  # noqa: F401  # fail here, by name, rather than inside the first attention

    device = torch.device("cuda")
    steps_list = [int(s) for s in args.steps.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "mode": "random weights",
        "xformers": "xformers" if args.xformers == "real" else "per-segment SDPA stand-in",
        "spconv_algo": os.environ["SPCONV_ALGO"],
    }
    reference_rows: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            pipeline = reference_pipeline(ref, TrellisConfig.official(), device)
            meta["stand_ins"] = pipeline.stand_ins
            reference_rows = bench_reference(pipeline, steps_list, args.repeats, device)
        del pipeline
    except Exception:  # the reference failing must not lose our rows, and says why
        meta["reference_error"] = traceback.format_exc()[-3000:]
        print(meta["reference_error"], flush=True)
    torch.cuda.empty_cache()
    ours_rows: list[dict[str, Any]] = []
    ours_args = argparse.Namespace(out=args.out, repeats=args.repeats, faces=args.faces, texture_size=args.texture_size, preset="quality_random")
    if args.ours != "none":
        # Imported here: it needs gen3d's serving dependencies, which the reference's rows do not.
        from scripts.bench_trellis import bench_variant

        for variant in args.ours.split(","):
            ours_rows += bench_variant(variant, steps_list, ours_args)
    (args.out / "bench_trellis_reference.json").write_text(json.dumps({"meta": meta, "reference": reference_rows, "ours": ours_rows}, indent=2))
    text = markdown(reference_rows, ours_rows, meta)
    (args.out / "bench_trellis_reference.md").write_text(text + "\n")
    print(text)
    return 0 if reference_rows else 1


if __name__ == "__main__":
    sys.exit(main())
