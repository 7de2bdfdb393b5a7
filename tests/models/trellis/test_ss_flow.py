"""The sparse-structure flow against the reference's, on identical seeded weights."""

import types

import pytest
import torch

from gen3d.models.trellis.ss_flow import (
    SparseStructureFlowConfig,
    SparseStructureFlowModel,
    patchify,
    unpatchify,
)
from tests.models.trellis.reference import (
    assert_parity,
    layout_digest,
    load_seeded,
    reference_outputs,
)

SEED = 5
#: ckpts/ss_flow_img_dit_L_16l8_fp16.json "args".
OFFICIAL_ARGS = {
    "resolution": 16,
    "in_channels": 8,
    "out_channels": 8,
    "model_channels": 1024,
    "cond_channels": 1024,
    "num_blocks": 24,
    "num_heads": 16,
    "mlp_ratio": 4,
    "patch_size": 1,
    "pe_mode": "ape",
    "qk_rms_norm": True,
    "use_fp16": True,
}
#: The tiny config (patch 2) and a patch-1 variant, as the official model is.
CONFIGS = {
    "patch2": SparseStructureFlowConfig.tiny(),
    "patch1": SparseStructureFlowConfig(
        resolution=4, model_channels=64, cond_channels=48, num_blocks=2, num_heads=4, patch_size=1, use_fp16=False
    ),
}


def _inputs(cfg: SparseStructureFlowConfig) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    side = cfg.resolution
    return {
        "x": torch.randn(2, cfg.in_channels, side, side, side, generator=generator),
        "t": torch.tensor([1000.0, 437.5]),
        "cond": torch.randn(2, 9, cfg.cond_channels, generator=generator),
    }


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    outputs = {}
    for name, cfg in CONFIGS.items():
        inputs = _inputs(cfg)
        model = load_seeded(ref.models.SparseStructureFlowModel(**cfg.to_reference_dict()), SEED)
        outputs[name] = model(inputs["x"], inputs["t"], inputs["cond"])
    with torch.device("meta"):
        full = ref.models.SparseStructureFlowModel(**OFFICIAL_ARGS)
    outputs.update(layout_digest(full))
    return outputs


def _ours(cfg: SparseStructureFlowConfig) -> SparseStructureFlowModel:
    return load_seeded(SparseStructureFlowModel(cfg), SEED)


def test_flow_matches_the_reference_and_its_full_sizelayout_digest() -> None:
    ours = {}
    with torch.no_grad():
        for name, cfg in CONFIGS.items():
            inputs = _inputs(cfg)
            ours[name] = _ours(cfg)(inputs["x"], inputs["t"], inputs["cond"])
    with torch.device("meta"):
        full = SparseStructureFlowModel(SparseStructureFlowConfig.official())
    ours.update(layout_digest(full))
    assert_parity(ours, reference_outputs("ss_flow", _reference))


def test_full_size_has_the_official_buffer_and_parameter_count() -> None:
    with torch.device("meta"):
        full = SparseStructureFlowModel(SparseStructureFlowConfig.official())
    assert sum(p.numel() for p in full.parameters()) == 555_543_560
    assert tuple(full.state_dict()["pos_emb"].shape) == (4096, 1024)
    assert tuple(full.state_dict()["blocks.23.self_attn.q_rms_norm.gamma"].shape) == (16, 64)


def test_precomputed_context_kv_gives_the_same_velocity() -> None:
    cfg = CONFIGS["patch2"]
    inputs, model = _inputs(cfg), _ours(cfg)
    with torch.no_grad():
        direct = model(inputs["x"], inputs["t"], inputs["cond"])
        cached = model(inputs["x"], inputs["t"], context_kv=model.project_context(inputs["cond"]))
    assert torch.equal(direct, cached)


def test_patchify_round_trips_and_orders_channels_as_the_reference() -> None:
    x = torch.arange(2 * 3 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4, 4)
    folded = patchify(x, 2)
    assert folded.shape == (2, 24, 2, 2, 2)
    # channel c * 8 + (i * 2 + j) * 2 + k holds offset (i, j, k) of channel c's cube
    assert folded[1, 2 * 8 + 5, 1, 0, 1] == x[1, 2, 2 + 1, 0 + 0, 2 + 1]
    assert torch.equal(unpatchify(folded, 2), x)


def test_config_reads_and_writes_the_checkpoint_args() -> None:
    cfg = SparseStructureFlowConfig.from_reference_dict(OFFICIAL_ARGS)
    assert cfg == SparseStructureFlowConfig.official()
    assert SparseStructureFlowConfig.from_reference_dict(cfg.to_reference_dict()) == cfg
    # Left-out keys take the reference constructor's defaults (patch 2, 64 channels per head).
    required = {key: OFFICIAL_ARGS[key] for key in ("resolution", "in_channels", "out_channels", "model_channels")}
    required.update(cond_channels=1024, num_blocks=24)
    defaults = SparseStructureFlowConfig.from_reference_dict(required)
    assert (defaults.patch_size, defaults.num_heads, defaults.qk_rms_norm) == (2, 16, False)
    with pytest.raises(ValueError, match="unknown keys \\['depth'\\]"):
        SparseStructureFlowConfig.from_reference_dict({**OFFICIAL_ARGS, "depth": 3})
    with pytest.raises(ValueError, match="pe_mode"):
        SparseStructureFlowConfig.from_reference_dict({**OFFICIAL_ARGS, "pe_mode": "rope"})


def test_forward_rejects_a_wrong_shape() -> None:
    cfg = CONFIGS["patch2"]
    inputs, model = _inputs(cfg), _ours(cfg)
    with pytest.raises(ValueError, match="x: expected shape"):
        model(inputs["x"][:, :, :4], inputs["t"], inputs["cond"])


def test_flow_runs_in_bfloat16() -> None:
    cfg = CONFIGS["patch2"]
    inputs, model = _inputs(cfg), _ours(cfg)
    with torch.no_grad():
        expected = model(inputs["x"], inputs["t"], inputs["cond"])
        model.to(torch.bfloat16)
        for block in model.blocks:  # affine norms keep float32 weights, as in the reference's fp16 models
            block.norm2.float()
        got = model(inputs["x"], inputs["t"], inputs["cond"])
    assert got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < 0.05
