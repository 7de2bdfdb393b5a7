"""FLUX component building: public full-size configs on the meta device, tiny wiring, tokenizers, fp8 configs."""

import pytest
import torch

from gen3d.models.flux.components import (
    ARCHITECTURES,
    CLIP_MAX_LENGTH,
    build_clip_tokenizer,
    build_components,
    build_models,
    build_t5_tokenizer,
    float8_config,
    pipeline_quantization_config,
)

PROMPT = "A wooden toy robot, 3D render; ünïcödé & emoji 🤖 too!"

# Public parameter counts: FLUX.1 [schnell] "12B" transformer (no guidance embedder), the T5 v1.1
# XXL encoder (~4.76B), the CLIP ViT-L/14 text tower (~123M) and the FLUX autoencoder (~84M).
EXPECTED_PARAMETERS = {
    "transformer": (11.85e9, 11.95e9),
    "text_encoder_2": (4.70e9, 4.80e9),
    "text_encoder": (120e6, 126e6),
    "vae": (82e6, 86e6),
}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_builds_on_meta_with_public_parameter_counts() -> None:
    models = build_models("full", "meta", torch.bfloat16)
    for name, (low, high) in EXPECTED_PARAMETERS.items():
        assert low < parameter_count(models[name]) < high, name
        assert all(p.is_meta for p in models[name].parameters()), name
        assert models[name].dtype == torch.bfloat16
    transformer = models["transformer"]
    assert len(transformer.transformer_blocks) == 19 and len(transformer.single_transformer_blocks) == 38
    assert transformer.inner_dim == 24 * 128


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_components_fit_together(size: str) -> None:
    arch = ARCHITECTURES[size]
    # FluxPipeline packs 2x2 latent patches into the transformer's input channels.
    assert arch.transformer["in_channels"] == 4 * arch.vae["latent_channels"]
    assert arch.transformer["joint_attention_dim"] == arch.t5["d_model"]
    assert arch.transformer["pooled_projection_dim"] == arch.clip_text["hidden_size"]
    head_dim = arch.transformer["attention_head_dim"]
    assert sum(arch.transformer["axes_dims_rope"]) == head_dim


def test_tiny_components_are_seeded() -> None:
    first = build_models("tiny", "cpu", torch.float32, seed=3)
    again = build_models("tiny", "cpu", torch.float32, seed=3)
    other = build_models("tiny", "cpu", torch.float32, seed=4)
    for name, module in first.items():
        reference = next(iter(module.state_dict().values()))
        assert torch.equal(reference, next(iter(again[name].state_dict().values()))), name
    weight = first["transformer"].x_embedder.weight
    assert not torch.equal(weight, other["transformer"].x_embedder.weight)
    assert not any(p.requires_grad for p in first["transformer"].parameters())


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_clip_tokenizer_ids_fit_the_embedding(size: str) -> None:
    vocab_size = ARCHITECTURES[size].clip_text["vocab_size"]
    tokenizer = build_clip_tokenizer(vocab_size)
    ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    assert tokenizer.model_max_length == CLIP_MAX_LENGTH == len(ids)
    assert ids[0] == vocab_size - 2 and max(ids) == vocab_size - 1
    # Legacy CLIP pooling takes argmax(ids): it must land on the first end-of-text token.
    eos_position = ids.index(vocab_size - 1)
    assert max(range(len(ids)), key=lambda i: ids[i]) == eos_position > 1
    # CLIP lower-cases and splits punctuation off words; the characters all survive the round trip.
    assert tokenizer.decode(ids[1:eos_position]).replace(" ", "") == PROMPT.lower().replace(" ", "")


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_t5_tokenizer_ids_fit_the_embedding(size: str) -> None:
    vocab_size = ARCHITECTURES[size].t5["vocab_size"]
    tokenizer = build_t5_tokenizer(vocab_size)
    ids = tokenizer(PROMPT, padding="max_length", max_length=256, truncation=True).input_ids
    assert len(ids) == 256 and max(ids) < vocab_size
    end = ids.index(tokenizer.eos_token_id)
    assert end > 10 and set(ids[end + 1 :]) == {tokenizer.pad_token_id}


def test_tokenizer_rejects_too_small_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        build_clip_tokenizer(100)
    with pytest.raises(ValueError, match="vocab_size"):
        build_t5_tokenizer(10)


def test_tiny_pipeline_text_embeddings_have_real_sequence_lengths() -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**build_components("tiny", "cpu", torch.float32))
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=48)
    assert prompt_embeds.shape == (1, 48, ARCHITECTURES["tiny"].t5["d_model"])
    assert pooled.shape == (1, ARCHITECTURES["tiny"].clip_text["hidden_size"])
    assert text_ids.shape == (48, 3)


def test_fp8_configs_share_one_float8_recipe() -> None:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    config = float8_config()
    assert isinstance(config, Float8DynamicActivationFloat8WeightConfig)
    assert all(isinstance(g, PerRow) for g in config.granularity)
    mapping = pipeline_quantization_config(transformer=True, text_encoder_2=True).quant_mapping
    assert set(mapping) == {"transformer", "text_encoder_2"}
    assert type(mapping["transformer"]).__module__.startswith("diffusers")
    assert type(mapping["text_encoder_2"]).__module__.startswith("transformers")
    for quantization in mapping.values():
        assert isinstance(quantization.quant_type, Float8DynamicActivationFloat8WeightConfig)
    only_transformer = pipeline_quantization_config(transformer=True, text_encoder_2=False).quant_mapping
    assert set(only_transformer) == {"transformer"}
    assert pipeline_quantization_config(transformer=False, text_encoder_2=False) is None
