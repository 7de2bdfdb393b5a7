"""The structured-latent flow against the reference's SLatFlowModel, and its official key layout."""

import types

import pytest
import torch

from gen3d.models.trellis.slat_flow import SLatFlowConfig, SLatFlowModel
from gen3d.models.trellis.sparse.tensor import SparseTensor
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import (
    half_like_release,
    random_feats,
    shell_coords,
    single_threaded,
)

SEED = 15


def _inputs() -> dict[str, torch.Tensor]:
    cfg = SLatFlowConfig.tiny()
    coords = shell_coords(16, [4.0, 6.0], SEED)
    single = shell_coords(16, [5.0], SEED + 1)
    generator = torch.Generator().manual_seed(SEED)
    return {
        "coords": coords,
        "feats": random_feats(coords.shape[0], cfg.in_channels, SEED),
        "single_coords": single,
        "single_feats": random_feats(single.shape[0], cfg.in_channels, SEED + 1),
        "t": torch.tensor([870.5, 120.0]),
        "cond": torch.randn(2, 6, cfg.cond_channels, generator=generator),
    }


def _reference_args(cfg: SLatFlowConfig) -> dict:
    return cfg.to_reference_dict() | {"use_fp16": False}


@single_threaded
def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    inputs = _inputs()
    model = load_seeded(ref.models.SLatFlowModel(**_reference_args(SLatFlowConfig.tiny())), SEED)
    x = ref.sparse.SparseTensor(feats=inputs["feats"], coords=inputs["coords"])
    # cond + uncond as one batch: the same voxels twice.
    twin_coords = torch.cat(
        [inputs["single_coords"], inputs["single_coords"] + torch.tensor([1, 0, 0, 0], dtype=torch.int32)]
    )
    twin = ref.sparse.SparseTensor(feats=inputs["single_feats"].repeat(2, 1), coords=twin_coords)
    return {
        "velocity": model(x, inputs["t"], inputs["cond"]).feats,
        "twin": model(twin, inputs["t"], inputs["cond"]).feats,
    }


def test_flow_matches_the_reference() -> None:
    inputs = _inputs()
    model = load_seeded(SLatFlowModel(SLatFlowConfig.tiny()), SEED)
    x = SparseTensor(inputs["coords"], inputs["feats"])
    twin = SparseTensor(inputs["single_coords"], inputs["single_feats"]).repeat_batch(2)
    with torch.no_grad():
        ours = {
            "velocity": model(x, inputs["t"], inputs["cond"]).feats,
            "twin": model(twin, inputs["t"], inputs["cond"]).feats,
        }
    assert_parity(ours, reference_outputs("slat_flow", _reference))


def _shapes(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(value.shape, dtype=torch.int64) for name, value in module.state_dict().items()}


def _official_reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = ref.models.SLatFlowModel(**SLatFlowConfig.official().to_reference_dict())
    return _shapes(model)


def test_official_keys_and_shapes_match_the_reference() -> None:
    with torch.device("meta"):
        model = SLatFlowModel(SLatFlowConfig.official())
    expected = reference_outputs("slat_flow_official_keys", _official_reference)
    assert_parity(_shapes(model), expected)
    assert sum(p.numel() for p in model.parameters()) == sum(int(shape.prod()) for shape in expected.values())


def test_official_config_round_trips_the_checkpoint_args() -> None:
    args = {
        "resolution": 64, "in_channels": 8, "out_channels": 8, "model_channels": 1024, "cond_channels": 1024,
        "num_blocks": 24, "num_heads": 16, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
        "io_block_channels": [128], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": True,
    }  # fmt: skip
    cfg = SLatFlowConfig.from_reference_dict(args)
    assert cfg == SLatFlowConfig.official()
    assert SLatFlowConfig.from_reference_dict(cfg.to_reference_dict()) == cfg
    with pytest.raises(ValueError, match="use_rope"):
        SLatFlowConfig.from_reference_dict(args | {"use_rope": True})
    with pytest.raises(ValueError, match="share_mod"):
        SLatFlowConfig.from_reference_dict(args | {"share_mod": True})


def test_steps_on_the_same_voxels_build_their_maps_once() -> None:
    inputs = _inputs()
    model = load_seeded(SLatFlowModel(SLatFlowConfig.tiny()), SEED)
    x = SparseTensor(inputs["single_coords"], inputs["single_feats"])
    context_kv = model.project_context(inputs["cond"])
    with torch.no_grad():
        first = model(x.repeat_batch(2), inputs["t"], context_kv=context_kv)
        second = model((x - 0.1 * first.feats[: x.coords.shape[0]]).repeat_batch(2), inputs["t"], context_kv=context_kv)
        direct = model(x.repeat_batch(2), inputs["t"], inputs["cond"])
    assert torch.equal(first.feats, direct.feats)
    assert first.coords is second.coords
    fine = x.cache.get(("repeat_batch", 2))[1]
    coarse = fine.get(("downsample", 2)).cache
    assert set(fine.builds.values()) == {1} and ("neighbours", 3) in fine.builds
    assert set(coarse.builds.values()) == {1} and ("neighbours", 3) in coarse.builds


def test_bf16_torso_stays_close_to_fp32() -> None:
    inputs = _inputs()
    model = load_seeded(SLatFlowModel(SLatFlowConfig.tiny()), SEED)
    x = SparseTensor(inputs["single_coords"], inputs["single_feats"])
    t, cond = inputs["t"][:1], inputs["cond"][:1]
    with torch.no_grad():
        full = model(x, t, cond).feats
        for part in (model.input_blocks, model.blocks, model.out_blocks):
            half_like_release(part)
        half = model(x, t, cond)
    assert half.dtype == torch.float32 and model.torso_dtype == torch.bfloat16
    assert (half.feats - full).norm() / full.norm() < 3e-2


def test_inputs_are_checked() -> None:
    inputs = _inputs()
    model = SLatFlowModel(SLatFlowConfig.tiny())
    x = SparseTensor(inputs["coords"], inputs["feats"])
    with pytest.raises(ValueError, match="t:"):
        model(x, inputs["t"][:1], inputs["cond"])
    with pytest.raises(ValueError, match="cond:"):
        model(x, inputs["t"], inputs["cond"][:, :, :5])
