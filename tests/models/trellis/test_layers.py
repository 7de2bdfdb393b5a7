"""The shared TRELLIS layers against the reference's modules, on identical seeded weights."""

import types

import torch

from gen3d.models.trellis.layers import (
    MultiHeadAttention,
    TimestepEmbedder,
    position_embedding,
)
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs

SEED = 3


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    return {
        "x": torch.randn(2, 11, 64, generator=generator),
        "context": torch.randn(2, 7, 48, generator=generator),
        "t": torch.tensor([999.0, 123.25]),
        "positions": torch.randint(0, 64, (50, 3), generator=generator),
    }


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    from trellis.models.sparse_structure_flow import TimestepEmbedder as Embedder
    from trellis.modules.attention import MultiHeadAttention as Attention
    from trellis.modules.transformer import AbsolutePositionEmbedder

    inputs = _inputs()
    self_attention = load_seeded(Attention(64, num_heads=4, qk_rms_norm=True), SEED)
    cross_attention = load_seeded(Attention(64, num_heads=4, ctx_channels=48, type="cross", qk_rms_norm=True), SEED)
    return {
        "self": self_attention(inputs["x"]),
        "cross": cross_attention(inputs["x"], inputs["context"]),
        "timestep": load_seeded(Embedder(64), SEED)(inputs["t"]),
        "position": AbsolutePositionEmbedder(64)(inputs["positions"]),
    }


def test_layers_match_the_reference() -> None:
    inputs = _inputs()
    self_attention = load_seeded(MultiHeadAttention(64, num_heads=4, qk_rms_norm=True), SEED)
    cross_attention = load_seeded(MultiHeadAttention(64, 4, ctx_channels=48, cross=True, qk_rms_norm=True), SEED)
    with torch.no_grad():
        ours = {
            "self": self_attention(inputs["x"]),
            "cross": cross_attention(inputs["x"], inputs["context"]),
            "timestep": load_seeded(TimestepEmbedder(64), SEED)(inputs["t"]),
            "position": position_embedding(inputs["positions"], 64),
        }
    assert_parity(ours, reference_outputs("layers", _reference))


def test_cached_context_projection_gives_the_same_cross_attention() -> None:
    inputs = _inputs()
    attention = load_seeded(MultiHeadAttention(64, 4, ctx_channels=48, cross=True, qk_rms_norm=True), SEED)
    with torch.no_grad():
        cached = attention(inputs["x"], context_kv=attention.project_context(inputs["context"]))
        direct = attention(inputs["x"], inputs["context"])
    assert torch.equal(cached, direct)
