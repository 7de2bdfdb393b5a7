"""The dense modulated cross-attention block against the reference's, on identical seeded weights."""

import types

import torch

from gen3d.models.trellis.transformer import ModulatedTransformerCrossBlock
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs

SEED = 11
#: width, condition width, heads; both RMS norms on so that every optional key is covered.
SHAPE = {"channels": 64, "ctx_channels": 48, "num_heads": 4, "qk_rms_norm": True, "qk_rms_norm_cross": True}


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    return {
        "x": torch.randn(2, 27, 64, generator=generator),
        "mod": torch.randn(2, 64, generator=generator),
        "context": torch.randn(2, 9, 48, generator=generator),
    }


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    from trellis.modules.transformer import ModulatedTransformerCrossBlock as Block

    inputs = _inputs()
    block = load_seeded(Block(**SHAPE), SEED)
    return {"block": block(inputs["x"], inputs["mod"], inputs["context"])}


def _ours() -> ModulatedTransformerCrossBlock:
    return load_seeded(ModulatedTransformerCrossBlock(**SHAPE), SEED)


def test_block_matches_the_reference() -> None:
    inputs = _inputs()
    with torch.no_grad():
        ours = {"block": _ours()(inputs["x"], inputs["mod"], inputs["context"])}
    assert_parity(ours, reference_outputs("transformer", _reference))


def test_block_keys_are_the_checkpoints() -> None:
    keys = set(_ours().state_dict())
    assert {"norm2.weight", "norm2.bias", "adaLN_modulation.1.weight", "self_attn.to_qkv.weight"} <= keys
    assert {"cross_attn.to_q.weight", "cross_attn.to_kv.bias", "mlp.mlp.0.weight", "mlp.mlp.2.bias"} <= keys
    # norm1 and norm3 have no affine parameters: the modulation takes their place.
    assert not any(key.startswith(("norm1.", "norm3.")) for key in keys)


def test_precomputed_context_kv_gives_the_same_output() -> None:
    inputs, block = _inputs(), _ours()
    with torch.no_grad():
        direct = block(inputs["x"], inputs["mod"], inputs["context"])
        cached = block(inputs["x"], inputs["mod"], context_kv=block.project_context(inputs["context"]))
    assert torch.equal(direct, cached)


def test_block_runs_in_bfloat16_with_float32_norms() -> None:
    inputs, block = _inputs(), _ours()
    with torch.no_grad():
        expected = block(inputs["x"], inputs["mod"], inputs["context"])
        block.to(torch.bfloat16)
        for module in (block.norm2,):  # the one affine norm keeps float32 weights, as the reference's fp16 models do
            module.float()
        got = block(*(inputs[name].bfloat16() for name in ("x", "mod", "context")))
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).norm() / expected.norm() < 0.05
