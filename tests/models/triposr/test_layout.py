"""The official layout on the meta device: exact key set, shapes and counts from specs/triposr.md."""

import pytest
import torch

from gen3d.models.triposr import TripoSR, TripoSRConfig


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return TripoSR.from_config(TripoSRConfig.official(), device="meta").state_dict()


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """The key list written out from the spec, independently of the modules."""
    vit = "image_tokenizer.model."
    shapes: dict[str, tuple[int, ...]] = {
        vit + "embeddings.cls_token": (1, 1, 768),
        vit + "embeddings.position_embeddings": (1, 197, 768),
        vit + "embeddings.patch_embeddings.projection.weight": (768, 3, 16, 16),
        vit + "embeddings.patch_embeddings.projection.bias": (768,),
        vit + "layernorm.weight": (768,),
        vit + "layernorm.bias": (768,),
        vit + "pooler.dense.weight": (768, 768),
        vit + "pooler.dense.bias": (768,),
        "tokenizer.embeddings": (3, 1024, 32, 32),
        "backbone.norm.weight": (1024,),
        "backbone.norm.bias": (1024,),
        "backbone.proj_in.weight": (1024, 1024),
        "backbone.proj_in.bias": (1024,),
        "backbone.proj_out.weight": (1024, 1024),
        "backbone.proj_out.bias": (1024,),
        "post_processor.upsample.weight": (1024, 40, 2, 2),
        "post_processor.upsample.bias": (40,),
    }
    for n in range(12):
        layer = f"{vit}encoder.layer.{n}."
        for name in ("query", "key", "value"):
            shapes[f"{layer}attention.attention.{name}.weight"] = (768, 768)
            shapes[f"{layer}attention.attention.{name}.bias"] = (768,)
        shapes[layer + "attention.output.dense.weight"] = (768, 768)
        shapes[layer + "attention.output.dense.bias"] = (768,)
        shapes[layer + "intermediate.dense.weight"] = (3072, 768)
        shapes[layer + "intermediate.dense.bias"] = (3072,)
        shapes[layer + "output.dense.weight"] = (768, 3072)
        shapes[layer + "output.dense.bias"] = (768,)
        for norm in ("layernorm_before", "layernorm_after"):
            shapes[f"{layer}{norm}.weight"] = (768,)
            shapes[f"{layer}{norm}.bias"] = (768,)
    for n in range(16):
        block = f"backbone.transformer_blocks.{n}."
        for norm in ("norm1", "norm2", "norm3"):
            shapes[f"{block}{norm}.weight"] = (1024,)
            shapes[f"{block}{norm}.bias"] = (1024,)
        for attn, kv_in in (("attn1", 1024), ("attn2", 768)):
            shapes[f"{block}{attn}.to_q.weight"] = (1024, 1024)
            shapes[f"{block}{attn}.to_k.weight"] = (1024, kv_in)
            shapes[f"{block}{attn}.to_v.weight"] = (1024, kv_in)
            shapes[f"{block}{attn}.to_out.0.weight"] = (1024, 1024)
            shapes[f"{block}{attn}.to_out.0.bias"] = (1024,)
        shapes[block + "ff.net.0.proj.weight"] = (8192, 1024)
        shapes[block + "ff.net.0.proj.bias"] = (8192,)
        shapes[block + "ff.net.2.weight"] = (1024, 4096)
        shapes[block + "ff.net.2.bias"] = (1024,)
    dims = [120] + [64] * 9 + [4]
    for i in range(10):
        shapes[f"decoder.layers.{2 * i}.weight"] = (dims[i + 1], dims[i])
        shapes[f"decoder.layers.{2 * i}.bias"] = (dims[i + 1],)
    return shapes


def test_official_keys_and_shapes_match_spec(official_state: dict[str, torch.Tensor]) -> None:
    got = {k: tuple(v.shape) for k, v in official_state.items()}
    assert got == _expected_shapes()
    assert len(got) == 549
    assert all(v.is_meta for v in official_state.values())


def test_official_parameter_counts(official_state: dict[str, torch.Tensor]) -> None:
    counts = {
        "image_tokenizer": 86_389_248,
        "tokenizer": 3_145_728,
        "backbone": 329_535_488,
        "post_processor": 163_880,
        "decoder": 41_284,
    }
    for prefix, expected in counts.items():
        assert sum(v.numel() for k, v in official_state.items() if k.startswith(prefix + ".")) == expected, prefix
    assert sum(v.numel() for v in official_state.values()) == 419_275_628
