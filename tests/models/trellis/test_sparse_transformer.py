"""Sparse transformer blocks (the decoders' swin block, the flow's modulated block) against the reference."""

import types

import torch

from gen3d.models.trellis.sparse.tensor import SparseTensor
from gen3d.models.trellis.sparse_transformer import (
    ModulatedSparseTransformerCrossBlock,
    SparseTransformerBlock,
)
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import (
    half_like_release,
    random_feats,
    shell_coords,
)

SEED = 14
WIDTH, HEADS, CONTEXT = 32, 4, 24


def _inputs() -> dict[str, torch.Tensor]:
    coords = shell_coords(12, [3.0, 4.5], SEED)
    generator = torch.Generator().manual_seed(SEED)
    return {
        "coords": coords,
        "feats": random_feats(coords.shape[0], WIDTH, SEED),
        "mod": torch.randn(2, WIDTH, generator=generator),
        "context": torch.randn(2, 5, CONTEXT, generator=generator),
    }


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    from trellis.modules.sparse.transformer import (
        ModulatedSparseTransformerCrossBlock as ModulatedBlock,
    )
    from trellis.modules.sparse.transformer import SparseTransformerBlock as Block

    inputs = _inputs()
    x = ref.sparse.SparseTensor(feats=inputs["feats"], coords=inputs["coords"])
    swin = load_seeded(Block(WIDTH, HEADS, attn_mode="windowed", window_size=4, shift_window=2), SEED)
    modulated = load_seeded(ModulatedBlock(WIDTH, CONTEXT, HEADS, qk_rms_norm=True), SEED)
    return {"swin": swin(x).feats, "modulated": modulated(x, inputs["mod"], inputs["context"]).feats}


def _ours() -> tuple[SparseTransformerBlock, ModulatedSparseTransformerCrossBlock]:
    swin = load_seeded(SparseTransformerBlock(WIDTH, HEADS, attn_mode="windowed", window_size=4, shift_window=2), SEED)
    modulated = load_seeded(ModulatedSparseTransformerCrossBlock(WIDTH, CONTEXT, HEADS, qk_rms_norm=True), SEED)
    return swin, modulated


def test_blocks_match_the_reference() -> None:
    inputs = _inputs()
    x = SparseTensor(inputs["coords"], inputs["feats"])
    swin, modulated = _ours()
    with torch.no_grad():
        ours = {"swin": swin(x).feats, "modulated": modulated(x, inputs["mod"], inputs["context"]).feats}
    assert_parity(ours, reference_outputs("sparse_transformer", _reference))


def test_key_names_and_affine_flags() -> None:
    swin, modulated = _ours()
    assert sorted(swin.state_dict()) == [
        "attn.to_out.bias", "attn.to_out.weight", "attn.to_qkv.bias", "attn.to_qkv.weight",
        "mlp.mlp.0.bias", "mlp.mlp.0.weight", "mlp.mlp.2.bias", "mlp.mlp.2.weight",
    ]  # fmt: skip
    names = set(modulated.state_dict())
    assert {"norm2.weight", "norm2.bias", "adaLN_modulation.1.weight", "cross_attn.to_kv.weight"} <= names
    assert not any(name.startswith(("norm1.", "norm3.")) for name in names)
    assert {"self_attn.q_rms_norm.gamma", "self_attn.k_rms_norm.gamma"} <= names


def test_precomputed_context_and_bf16() -> None:
    inputs = _inputs()
    x = SparseTensor(inputs["coords"], inputs["feats"])
    _, block = _ours()
    with torch.no_grad():
        direct = block(x, inputs["mod"], inputs["context"]).feats
        cached = block(x, inputs["mod"], context_kv=block.project_context(inputs["context"])).feats
        assert torch.equal(direct, cached)
        half = half_like_release(block)(x.to(torch.bfloat16), inputs["mod"].bfloat16(), inputs["context"].bfloat16())
    assert half.dtype == torch.bfloat16
    assert (half.feats.float() - direct).norm() / direct.norm() < 2e-2
