"""The whole TRELLIS pipeline against the reference's, chained as its ``TrellisImageTo3DPipeline.run`` does.

Identical seeded weights (tiny widths, the release's layer structure) and one seeded noise stream
on both sides: DINOv2 tokens -> guided Euler sampling of the structure -> occupied voxels -> guided
sampling of the structured latent -> de-normalised latent -> the mesh decoder's FlexiCubes mesh and
the Gaussian decoder's Gaussians. The reference's pipeline module itself imports torchvision and
rembg, so its five steps are chained here exactly as it chains them.
"""

import types

import pytest
import torch
import torch.nn.functional as F

from gen3d.models.trellis.config import TrellisConfig
from gen3d.models.trellis.pipeline import TrellisImageTo3D
from tests.models.trellis.reference import (
    assert_parity,
    load_seeded,
    reference_dinov2,
    reference_outputs,
)
from tests.models.trellis.sparse_cases import single_threaded

SEED = 31
NOISE_SEED = 5
#: Added to both structure decoders' output bias: with these seeds it leaves ~150 of 4096 voxels
#: occupied, a structure as sparse as a real one and a recording of a few hundred kilobytes.
OCCUPANCY_SHIFT = -0.4


def _image() -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(518), torch.arange(518), indexing="ij")
    image = torch.zeros(3, 518, 518)
    image[:, (rows - 259) ** 2 + (cols - 280) ** 2 < 150**2] = torch.tensor([0.8, 0.4, 0.2])[:, None]
    return image


def _sparser(decoder: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        decoder.out_layer[-1].bias += OCCUPANCY_SHIFT
    return decoder


def _ours() -> TrellisImageTo3D:
    model = TrellisImageTo3D.from_config(TrellisConfig.tiny())
    for name in ("conditioner", "sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model",
                 "slat_decoder_mesh", "slat_decoder_gs"):  # fmt: skip
        load_seeded(model.get_submodule(name), SEED)
    _sparser(model.sparse_structure_decoder)
    return model


@single_threaded
def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    cfg = TrellisConfig.tiny()
    half = {"use_fp16": False}
    vit = load_seeded(reference_dinov2(cfg.conditioner), SEED)
    ss_flow = load_seeded(ref.models.SparseStructureFlowModel(**cfg.sparse_structure_flow.to_reference_dict() | half), SEED)
    ss_decoder = _sparser(load_seeded(ref.models.SparseStructureDecoder(**cfg.sparse_structure_decoder.to_reference_dict() | half), SEED))
    slat_flow = load_seeded(ref.models.SLatFlowModel(**cfg.slat_flow.to_reference_dict() | half), SEED)
    mesh_decoder = load_seeded(ref.models.SLatMeshDecoder(**cfg.mesh_decoder.to_reference_dict() | half), SEED)
    gs_decoder = load_seeded(ref.models.SLatGaussianDecoder(**cfg.gaussian_decoder.to_reference_dict() | half), SEED)
    sampler = ref.samplers.FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)

    # get_cond: normalise, x_prenorm of every token, a layer norm without affine.
    image = _image()[None]
    normalised = (image - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    features = vit(normalised, is_training=True)["x_prenorm"]
    cond = F.layer_norm(features, features.shape[-1:])
    neg_cond = torch.zeros_like(cond)
    generator = torch.Generator().manual_seed(NOISE_SEED)

    # sample_sparse_structure
    grid = cfg.sparse_structure_flow.resolution
    noise = torch.randn(1, cfg.sparse_structure_flow.in_channels, grid, grid, grid, generator=generator)
    structure = cfg.structure_sampler
    z = sampler.sample(ss_flow, noise, cond=cond, neg_cond=neg_cond, steps=structure.steps,
                       cfg_strength=structure.cfg_strength, cfg_interval=structure.cfg_interval,
                       rescale_t=structure.rescale_t, verbose=False).samples  # fmt: skip
    coords = torch.argwhere(ss_decoder(z) > 0)[:, [0, 2, 3, 4]].int()

    # sample_slat, then the normalisation
    latent_cfg = cfg.latent_sampler
    x = ref.sparse.SparseTensor(feats=torch.randn(coords.shape[0], 8, generator=generator), coords=coords)
    slat = sampler.sample(slat_flow, x, cond=cond, neg_cond=neg_cond, steps=latent_cfg.steps,
                          cfg_strength=latent_cfg.cfg_strength, cfg_interval=latent_cfg.cfg_interval,
                          rescale_t=latent_cfg.rescale_t, verbose=False).samples  # fmt: skip
    slat = slat * torch.tensor(cfg.slat_std)[None] + torch.tensor(cfg.slat_mean)[None]

    # decode_slat
    mesh = mesh_decoder(slat)[0]
    gaussians = gs_decoder(slat)[0]
    return {
        "coords": coords[:, 1:],
        "slat": slat.feats,
        "vertices": mesh.vertices,
        "faces": mesh.faces.int(),
        "colors": mesh.vertex_attrs[:, :3],
        "xyz": gaussians.get_xyz,
        "opacity": gaussians.get_opacity[:, 0],
        "scale": gaussians.get_scaling,
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return reference_outputs("pipeline", _reference)


def test_structure_latent_mesh_and_gaussians_match_the_reference(reference: dict[str, torch.Tensor]) -> None:
    model = _ours()
    generator = torch.Generator().manual_seed(NOISE_SEED)
    cfg = model.cfg
    with torch.no_grad():
        cond = model.condition(_image()[None])
        coords = model.sample_structure(cond, generator, cfg.structure_sampler)
        slat = model.sample_latent(cond, coords, generator, cfg.latent_sampler)
        mesh = model.decode_mesh(slat)
        gaussians = model.decode_gaussians(slat)
    assert 50 < coords.shape[0] < 500  # a sparse structure, as OCCUPANCY_SHIFT intends
    ours = {
        "coords": coords[:, 1:],
        "slat": slat.feats,
        "vertices": mesh.vertices,
        "faces": mesh.faces.int(),
        "colors": mesh.colors,
        "xyz": gaussians.xyz,
        "opacity": gaussians.opacity,
        "scale": gaussians.scale,
    }
    assert_parity(ours, reference)


def test_run_is_the_chain_and_a_seed_repeats(reference: dict[str, torch.Tensor]) -> None:
    model = _ours()
    first, again = (model.run(_image(), seed=NOISE_SEED, gaussians=True) for _ in range(2))
    assert torch.equal(first.coords, reference["coords"].to(first.coords.dtype))
    assert torch.equal(first.mesh.faces, again.mesh.faces) and torch.equal(first.gaussians.xyz, again.gaussians.xyz)
