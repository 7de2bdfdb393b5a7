"""The sparse-structure decoder against the reference's, on identical seeded weights."""

import types

import pytest
import torch

from gen3d.models.trellis.ss_decoder import (
    SparseStructureDecoder,
    SparseStructureDecoderConfig,
    occupied_voxels,
    pixel_shuffle_3d,
)
from tests.models.trellis.reference import (
    assert_parity,
    layout_digest,
    load_seeded,
    reference_outputs,
)

SEED = 7
#: ckpts/ss_dec_conv3d_16l8_fp16.json "args".
OFFICIAL_ARGS = {
    "out_channels": 1,
    "latent_channels": 8,
    "num_res_blocks": 2,
    "num_res_blocks_middle": 2,
    "channels": [512, 128, 32],
    "use_fp16": True,
}


def _latent() -> torch.Tensor:
    return torch.randn(2, 8, 4, 4, 4, generator=torch.Generator().manual_seed(SEED))


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    args = SparseStructureDecoderConfig.tiny().to_reference_dict()
    decoder = load_seeded(ref.models.SparseStructureDecoder(**args), SEED)
    logits = decoder(_latent())
    with torch.device("meta"):
        full = ref.models.SparseStructureDecoder(**OFFICIAL_ARGS)
    # The pipeline's sparse structure: positive cells, (batch, x, y, z).
    coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
    return {"logits": logits, "coords": coords, **layout_digest(full)}


def _ours() -> SparseStructureDecoder:
    return load_seeded(SparseStructureDecoder(SparseStructureDecoderConfig.tiny()), SEED)


def test_decoder_matches_the_reference_and_its_full_sizelayout_digest() -> None:
    with torch.no_grad():
        logits = _ours()(_latent())
    with torch.device("meta"):
        full = SparseStructureDecoder(SparseStructureDecoderConfig.official())
    ours = {"logits": logits, "coords": occupied_voxels(logits), **layout_digest(full)}
    assert_parity(ours, reference_outputs("ss_decoder", _reference))


def test_full_size_decodes_16_cubed_to_64_cubed_logits() -> None:
    with torch.device("meta"):
        full = SparseStructureDecoder(SparseStructureDecoderConfig.official())
        logits = full(torch.empty(1, 8, 16, 16, 16))
    assert logits.shape == (1, 1, 64, 64, 64)
    assert sum(p.numel() for p in full.parameters()) == 73_671_201


def test_pixel_shuffle_places_channel_groups_in_space() -> None:
    x = torch.arange(2 * 16 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 16, 2, 2, 2)
    out = pixel_shuffle_3d(x, 2)
    assert out.shape == (2, 2, 4, 4, 4)
    # channel c * 8 + (i * 2 + j) * 2 + k lands at offset (i, j, k) of cell c's cube
    assert out[1, 1, 2 * 1 + 1, 2 * 0 + 1, 2 * 1 + 0] == x[1, 1 * 8 + (1 * 2 + 1) * 2 + 0, 1, 0, 1]


def test_config_reads_and_writes_the_checkpoint_args() -> None:
    cfg = SparseStructureDecoderConfig.from_reference_dict(OFFICIAL_ARGS)
    assert cfg == SparseStructureDecoderConfig.official()
    assert SparseStructureDecoderConfig.from_reference_dict(cfg.to_reference_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys \\['widths'\\]"):
        SparseStructureDecoderConfig.from_reference_dict({**OFFICIAL_ARGS, "widths": [1]})
    with pytest.raises(ValueError, match="norm_type"):
        SparseStructureDecoderConfig.from_reference_dict({**OFFICIAL_ARGS, "norm_type": "group"})


def test_decoder_runs_in_bfloat16() -> None:
    decoder = _ours()
    with torch.no_grad():
        expected = decoder(_latent())
        decoder.to(torch.bfloat16)
        for module in decoder.modules():  # norms keep float32 weights, as in the reference's fp16 models
            if isinstance(module, torch.nn.LayerNorm):
                module.float()
        got = decoder(_latent())
    assert got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < 0.05
