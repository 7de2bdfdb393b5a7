"""Gaussian decoder output -> activated Gaussians, against the reference's to_representation + get_*."""

import dataclasses
import types

import pytest
import torch

from gen3d.models.trellis.gaussians import (
    SH_C0,
    GaussianRepresentationConfig,
    hammersley_offset_perturbation,
    to_gaussians,
)
from gen3d.results import Gaussians
from tests.models.trellis.reference import assert_parity, reference_outputs

SEED = 7
RESOLUTION = 64
#: The official representation_config, as ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.json spells it.
OFFICIAL = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 0.0009, "scaling_bias": 0.004, "opacity_bias": 0.1, "scaling_activation": "softplus",
}  # fmt: skip
#: A second config that takes the other branches: exp scales, no perturbation, other multipliers.
OTHER = OFFICIAL | {
    "lr": {"_xyz": 0.5, "_features_dc": 2.0, "_opacity": 1.5, "_scaling": 0.7, "_rotation": 1.0},
    "perturb_offset": False, "num_gaussians": 4, "scaling_activation": "exp",
    "scaling_bias": 0.01, "opacity_bias": 0.3,
}  # fmt: skip
CASES = {"official": (OFFICIAL, 120), "other": (OTHER, 40)}


def _inputs(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    config, voxels = CASES[case]
    generator = torch.Generator().manual_seed(SEED + len(case))
    coords = torch.randperm(RESOLUTION**3, generator=generator)[:voxels]
    coords = torch.stack([coords // RESOLUTION**2, coords // RESOLUTION % RESOLUTION, coords % RESOLUTION], dim=1)
    channels = GaussianRepresentationConfig.from_reference_dict(config).channels
    return coords, 2 * torch.randn(voxels, channels, generator=generator)


def _reference_decoder(ref: types.SimpleNamespace, config: dict) -> torch.nn.Module:
    # Only to_representation runs: the trunk is as small as the constructor allows.
    return ref.models.SLatGaussianDecoder(
        resolution=RESOLUTION, model_channels=32, latent_channels=8, num_blocks=1, num_heads=2,
        representation_config=config,
    )  # fmt: skip


def _reference(case: str) -> dict[str, torch.Tensor]:
    def compute(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
        config = CASES[case][0]
        coords, feats = _inputs(case)
        decoder = _reference_decoder(ref, config)
        batch_coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], dim=1)
        (gaussians,) = decoder.to_representation(ref.sparse.SparseTensor(feats=feats, coords=batch_coords))
        return {
            "perturbation": decoder.offset_perturbation,
            "xyz": gaussians.get_xyz,
            "features": gaussians.get_features,
            "opacity": gaussians.get_opacity,
            "scaling": gaussians.get_scaling,
            "rotation": gaussians.get_rotation,
        }

    return reference_outputs(f"gaussians_{case}", compute)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gaussians_match_the_reference(case: str) -> None:
    config = GaussianRepresentationConfig.from_reference_dict(CASES[case][0])
    coords, feats = _inputs(case)
    expected = _reference(case)
    gaussians = to_gaussians(coords, feats, config, expected["perturbation"] if config.perturb_offset else None)
    ours = {
        "perturbation": hammersley_offset_perturbation(config.num_gaussians, config.voxel_size),
        "xyz": gaussians.xyz,
        "features": gaussians.features_dc[:, None],
        "opacity": gaussians.opacity[:, None],
        "scaling": gaussians.scale,
        "rotation": gaussians.rotation,
    }
    assert_parity(ours, expected)


def test_perturbation_buffer_is_rebuilt_exactly() -> None:
    expected = _reference("official")["perturbation"]
    assert torch.equal(hammersley_offset_perturbation(32, 1.5), expected)


def test_official_config_round_trips_through_the_reference_dict() -> None:
    config = GaussianRepresentationConfig.from_reference_dict(OFFICIAL)
    assert config == GaussianRepresentationConfig.official()
    assert config.to_reference_dict() == OFFICIAL
    assert config.channels == 448
    assert [part.stop - part.start for part in config.layout.values()] == [96, 96, 96, 128, 32]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sh_degree": 0}, r"unknown keys \['sh_degree'\]"),
        ({"scaling_activation": "relu"}, "scaling_activation: expected 'softplus' or 'exp'"),
        ({"lr": {"_xyz": 1.0}}, "lr: expected keys"),
    ],
)
def test_bad_configs_are_rejected(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianRepresentationConfig.from_reference_dict(OFFICIAL | change)


def test_zero_output_gives_the_biases_around_the_voxel_centre() -> None:
    config = GaussianRepresentationConfig.official()
    coords = torch.tensor([[0, 0, 0], [63, 10, 31]])
    perturbation = hammersley_offset_perturbation(32, config.voxel_size)
    gaussians = to_gaussians(coords, torch.zeros(2, config.channels), config, perturbation)
    assert len(gaussians) == 64
    torch.testing.assert_close(gaussians.opacity, torch.full((64,), 0.1))
    torch.testing.assert_close(gaussians.scale, torch.full((64, 3), (0.004**2 + 0.0009**2) ** 0.5))
    torch.testing.assert_close(gaussians.rotation, torch.tensor([1.0, 0, 0, 0]).expand(64, 4))
    centres = ((coords.float() + 0.5) / 64 - 0.5).repeat_interleave(32, dim=0)  # voxel-major order
    offsets = (gaussians.xyz - centres) * 64  # in voxels: the Hammersley spread, within +-0.75
    torch.testing.assert_close(offsets, (torch.tanh(perturbation) * 0.75).repeat(2, 1))
    assert offsets.abs().max() <= 0.75


def test_scales_never_fall_below_the_3d_filter() -> None:
    config = GaussianRepresentationConfig.official()
    feats = torch.zeros(1, config.channels)
    feats[:, config.layout["_scaling"]] = -50.0
    gaussians = to_gaussians(torch.tensor([[1, 2, 3]]), feats, config, torch.zeros(32, 3))
    torch.testing.assert_close(gaussians.scale, torch.full((32, 3), 0.0009), rtol=1e-4, atol=0)


def test_splat_fields_fill_the_ply_gaussians() -> None:
    config = GaussianRepresentationConfig.from_reference_dict(OTHER)
    coords, feats = _inputs("other")
    gaussians = to_gaussians(coords, feats, config)
    fields = gaussians.splat_fields()
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(Gaussians))
    splat = Gaussians(**{name: value.numpy() for name, value in fields.items()})
    assert len(splat) == len(gaussians) == 160
    torch.testing.assert_close(torch.sigmoid(fields["opacity"]), gaussians.opacity)
    torch.testing.assert_close(torch.exp(fields["log_scales"]), gaussians.scale)
    torch.testing.assert_close(fields["rotations"].norm(dim=1), torch.ones(160))
    torch.testing.assert_close(gaussians.rgb, 0.5 + SH_C0 * gaussians.features_dc)


def test_perturbation_is_required_when_configured() -> None:
    config = GaussianRepresentationConfig.official()
    with pytest.raises(ValueError, match=r"offset_perturbation: expected \[32, 3\]"):
        to_gaussians(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, config.channels), config)
    with pytest.raises(ValueError, match=r"feats: expected a float \[1, 448\]"):
        to_gaussians(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 447), config, torch.zeros(32, 3))
