"""Radiance-field decoder output -> Strivec parameters, against the reference's to_representation."""

import types

import pytest
import torch

from gen3d.models.trellis.radiance_field import (
    RadianceFieldRepresentationConfig,
    to_radiance_field,
)
from tests.models.trellis.reference import assert_parity, reference_outputs

SEED = 13
RESOLUTION = 64
VOXELS = 150


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    keys = torch.randperm(RESOLUTION**3, generator=generator)[:VOXELS]
    coords = torch.stack([keys // RESOLUTION**2, keys // RESOLUTION % RESOLUTION, keys % RESOLUTION], dim=1)
    return coords, torch.randn(VOXELS, RadianceFieldRepresentationConfig.official().channels, generator=generator)


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    coords, feats = _inputs()
    decoder = ref.models.SLatRadianceFieldDecoder(
        resolution=RESOLUTION, model_channels=32, latent_channels=8, num_blocks=1, num_heads=2,
        representation_config={"rank": 16, "dim": 8},
    )  # fmt: skip
    batch_coords = torch.cat([torch.zeros(VOXELS, 1, dtype=torch.int32), coords.int()], dim=1)
    (field,) = decoder.to_representation(ref.sparse.SparseTensor(feats=feats, coords=batch_coords))
    return {
        "position": field.get_xyz,
        "depth": field.get_depth,
        "trivec": field.get_trivec,
        "density": field.get_density,
        "features": field.get_features,
        "density_shift": torch.tensor(field.density_shift),
    }


def test_radiance_field_matches_the_reference() -> None:
    coords, feats = _inputs()
    field = to_radiance_field(coords, feats, RadianceFieldRepresentationConfig.official())
    ours = {
        "position": field.position,
        "depth": field.depth,
        "trivec": field.trivec,
        "density": field.density,
        "features": field.features_dc,
        "density_shift": torch.tensor(field.density_shift),
    }
    assert_parity(ours, reference_outputs("radiance_field", _reference))


def test_zero_output_is_a_constant_field_at_the_voxel_centres() -> None:
    config = RadianceFieldRepresentationConfig(rank=4, dim=3)
    coords = torch.tensor([[0, 0, 0], [15, 7, 1]])
    field = to_radiance_field(coords, torch.zeros(2, config.channels), config, resolution=16)
    assert field.trivec.shape == (2, 4, 3, 3) and bool((field.trivec == 1).all())
    assert field.depth.dtype == torch.uint8 and field.depth.flatten().tolist() == [4, 4]
    torch.testing.assert_close(field.world_position, torch.tensor([[-15.0, -15, -15], [15, -1, -13]]) / 32)


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = RadianceFieldRepresentationConfig.from_reference_dict({"rank": 16, "dim": 8})
    assert config == RadianceFieldRepresentationConfig.official() and config.channels == 448
    assert config.to_reference_dict() == {"rank": 16, "dim": 8}
    with pytest.raises(ValueError, match=r"unknown keys \['degree'\]"):
        RadianceFieldRepresentationConfig.from_reference_dict({"rank": 16, "dim": 8, "degree": 2})


def test_bad_inputs_are_rejected() -> None:
    config = RadianceFieldRepresentationConfig.official()
    coords = torch.zeros(3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"feats: expected a float \[3, 448\]"):
        to_radiance_field(coords, torch.zeros(3, 440), config)
    with pytest.raises(ValueError, match="resolution: expected a power of two, got 48"):
        to_radiance_field(coords, torch.zeros(3, 448), config, resolution=48)
