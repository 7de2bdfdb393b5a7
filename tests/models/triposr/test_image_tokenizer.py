"""Our ViT against transformers' ViTModel (>= 5.9 names), and the 4.35 position interpolation."""

import pytest
import torch
import torch.nn.functional as F
import transformers

from gen3d.models.triposr.image_tokenizer import (
    ViTConfig,
    ViTModel,
    vit_keys_to_legacy,
    vit_keys_to_modern,
)

TINY = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _hf_model() -> transformers.ViTModel:
    config = transformers.ViTConfig(
        hidden_size=TINY.hidden_size,
        num_hidden_layers=TINY.num_hidden_layers,
        num_attention_heads=TINY.num_attention_heads,
        intermediate_size=TINY.intermediate_size,
        image_size=TINY.image_size,
        patch_size=TINY.patch_size,
        layer_norm_eps=1e-12,
        qkv_bias=True,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return transformers.ViTModel(config).eval()


def test_ours_to_transformers_gives_same_hidden_state() -> None:
    torch.manual_seed(0)
    ours = ViTModel(TINY).eval()
    hf = _hf_model()
    hf.load_state_dict(vit_keys_to_modern(ours.state_dict()), strict=True)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels), hf(pixels).last_hidden_state, rtol=1e-4, atol=1e-4)


def test_transformers_to_ours_roundtrip() -> None:
    torch.manual_seed(1)
    hf = _hf_model()
    modern = hf.state_dict()
    ours = ViTModel(TINY).eval()
    ours.load_state_dict(vit_keys_to_legacy(modern), strict=True)
    assert vit_keys_to_modern(vit_keys_to_legacy(modern)).keys() == modern.keys()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels), hf(pixels).last_hidden_state, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("modern,legacy", [
    ("image_tokenizer.model.layers.3.attention.q_proj.weight", "image_tokenizer.model.encoder.layer.3.attention.attention.query.weight"),
    ("image_tokenizer.model.layers.3.attention.o_proj.bias", "image_tokenizer.model.encoder.layer.3.attention.output.dense.bias"),
    ("image_tokenizer.model.layers.11.mlp.fc1.weight", "image_tokenizer.model.encoder.layer.11.intermediate.dense.weight"),
    ("image_tokenizer.model.layers.11.mlp.fc2.weight", "image_tokenizer.model.encoder.layer.11.output.dense.weight"),
    ("image_tokenizer.model.layers.0.layernorm_before.weight", "image_tokenizer.model.encoder.layer.0.layernorm_before.weight"),
    ("image_tokenizer.model.pooler.dense.weight", "image_tokenizer.model.pooler.dense.weight"),
])
def test_prefixed_key_mapping(modern: str, legacy: str) -> None:
    value, other = torch.zeros(1), "decoder.layers.0.weight"
    prefix = "image_tokenizer.model."
    assert list(vit_keys_to_legacy({modern: value, other: value}, prefix)) == [legacy, other]
    assert list(vit_keys_to_modern({legacy: value, other: value}, prefix)) == [modern, other]


def test_position_interpolation_uses_the_4_35_scale_factor() -> None:
    torch.manual_seed(2)
    model = ViTModel(TINY)
    embeddings = model.embeddings
    got = embeddings.interpolated_positions(512, 512)
    assert got.shape == (1, 1 + 32 * 32, TINY.hidden_size)
    grid = embeddings.position_embeddings[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=32.1 / 14, mode="bicubic", align_corners=False)
    by_size = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
    torch.testing.assert_close(got[:, 1:], by_scale.permute(0, 2, 3, 1).reshape(1, 1024, -1))
    assert not torch.allclose(got[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, 1024, -1), atol=1e-5)
    torch.testing.assert_close(got[:, :1], embeddings.position_embeddings[:, :1])
    assert embeddings.interpolated_positions(224, 224) is embeddings.position_embeddings
