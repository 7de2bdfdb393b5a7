"""FLUX.1-schnell components built from config, without downloading anything.

``full`` holds the public configs of ``black-forest-labs/FLUX.1-schnell`` (transformer, VAE,
scheduler) and of its text encoders (CLIP ViT-L/14 text tower, T5 v1.1 XXL encoder) as data, so a
full-size model with random weights can be built for speed and memory measurements. ``tiny`` keeps
the same classes at toy sizes for CPU tests. Tokenizers are built locally: their vocabularies are
small but every id stays inside the text encoder's embedding table, and the sequence lengths (CLIP
77, T5 ``max_sequence_length``) are the real ones, so timings match the public model's shapes.

fp8 goes through torchao's float8 config, used both by diffusers' ``PipelineQuantizationConfig``
(real weights) and by ``torchao.quantization.quantize_`` (random weights).
"""

import logging
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from gen3d.devices import building_on

if TYPE_CHECKING:
    from diffusers import PipelineQuantizationConfig
    from torchao.core.config import AOBaseConfig

logger = logging.getLogger(__name__)

Size = Literal["tiny", "full"]

#: CLIP's context length; FluxPipeline pads every prompt to the tokenizer's model_max_length.
CLIP_MAX_LENGTH = 77

# --- public configs (FLUX.1-schnell repo: transformer/, vae/, scheduler/, text_encoder*/) ---

FLUX_SCHNELL_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}

FLUX_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}

#: schnell is timestep-distilled: a static shift of 1.0, no resolution-dependent shifting.
FLUX_SCHNELL_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

#: openai/clip-vit-large-patch14 text tower. eos_token_id 2 selects the legacy pooling (argmax
#: of the ids), which is why the local tokenizer puts bos/eos at the two highest ids.
CLIP_VIT_L14_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": CLIP_MAX_LENGTH,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

#: google/t5-v1_1-xxl, encoder only.
T5_V1_1_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}

# --- tiny configs: same classes; in_channels = 4 * latent_channels (2x2 latent packing) ---

TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 1,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": False,
    "axes_dims_rope": (4, 6, 6),
}

#: Four levels like FLUX so the pipeline's VAE scale factor (8) and size rules are the real ones.
TINY_VAE: dict[str, Any] = {
    **FLUX_VAE,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
}

TINY_CLIP_TEXT: dict[str, Any] = {
    **CLIP_VIT_L14_TEXT,
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 64,
    "projection_dim": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}

TINY_T5: dict[str, Any] = {
    **T5_V1_1_XXL,
    "vocab_size": 256,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
}


@dataclass(frozen=True)
class FluxArchitecture:
    """Constructor keywords of each FLUX model component.

    Attributes:
        transformer: ``FluxTransformer2DModel`` keywords.
        vae: ``AutoencoderKL`` keywords.
        clip_text: ``CLIPTextConfig`` keywords (``text_encoder``).
        t5: ``T5Config`` keywords (``text_encoder_2``).
    """

    transformer: dict[str, Any]
    vae: dict[str, Any]
    clip_text: dict[str, Any]
    t5: dict[str, Any]


ARCHITECTURES: dict[str, FluxArchitecture] = {
    "full": FluxArchitecture(FLUX_SCHNELL_TRANSFORMER, FLUX_VAE, CLIP_VIT_L14_TEXT, T5_V1_1_XXL),
    "tiny": FluxArchitecture(TINY_TRANSFORMER, TINY_VAE, TINY_CLIP_TEXT, TINY_T5),
}


def build_clip_tokenizer(vocab_size: int) -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer whose vocabulary is the 256-symbol byte alphabet.

    Every word splits into single bytes (no merges), so any text tokenizes; ``<|startoftext|>``
    and ``<|endoftext|>`` sit at ``vocab_size - 2`` and ``vocab_size - 1`` as in OpenAI's vocab.

    Args:
        vocab_size: the text encoder's embedding rows (>= 514).

    Returns:
        A tokenizer padding to ``CLIP_MAX_LENGTH`` tokens.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = alphabet + [f"{symbol}</w>" for symbol in alphabet]
    if vocab_size < len(symbols) + 2:
        raise ValueError(f"vocab_size: expected at least {len(symbols) + 2} for the byte alphabet, got {vocab_size}")
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab["<|startoftext|>"] = vocab_size - 2
    vocab["<|endoftext|>"] = vocab_size - 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def build_t5_tokenizer(vocab_size: int) -> T5TokenizerFast:
    """A Unigram T5 tokenizer over printable ASCII (other characters map to ``<unk>``).

    Args:
        vocab_size: the text encoder's embedding rows; all ids stay below it.

    Returns:
        A tokenizer with T5's special ids (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) and no sentinels.
    """
    characters = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{character}", -3.0) for character in characters]
    pieces += [(character, -4.0) for character in characters]
    if vocab_size < len(pieces):
        raise ValueError(f"vocab_size: expected at least {len(pieces)} for the T5 pieces, got {vocab_size}")
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def build_models(size: Size, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Build the four FLUX networks with seeded random weights, in eval mode.

    Args:
        size: ``tiny`` or ``full`` (public FLUX.1-schnell sizes).
        device: where parameters are created; ``meta`` allocates nothing.
        dtype: parameter dtype.
        seed: each component uses ``seed + i``, so its weights do not depend on build order.

    Returns:
        ``transformer``, ``vae``, ``text_encoder`` (CLIP) and ``text_encoder_2`` (T5) modules.
    """
    arch = ARCHITECTURES[size]
    builders = {
        "transformer": lambda: FluxTransformer2DModel(**arch.transformer),
        "vae": lambda: AutoencoderKL(**arch.vae),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**arch.clip_text)),
        "text_encoder_2": lambda: T5EncoderModel(T5Config(**arch.t5)),
    }
    models = {}
    with building_on(device, dtype):
        for offset, (name, build) in enumerate(builders.items()):
            torch.manual_seed(seed + offset)
            models[name] = build().eval().requires_grad_(False)
    logger.info("built %s FLUX models on %s in %s", size, device, dtype)
    return models


def build_components(size: Size, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
    """Everything ``FluxPipeline(**components)`` needs: random models, local tokenizers, scheduler."""
    arch = ARCHITECTURES[size]
    return {
        **build_models(size, device, dtype, seed),
        "tokenizer": build_clip_tokenizer(arch.clip_text["vocab_size"]),
        "tokenizer_2": build_t5_tokenizer(arch.t5["vocab_size"]),
        "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHNELL_SCHEDULER),
    }


def check_float8_support(device: torch.device) -> None:
    """Fail at startup unless ``device`` can run torchao's float8 matmuls (CUDA, sm >= 8.9).

    Raises:
        ValueError: CPU device, or a GPU older than Ada/Hopper; says which precision works instead.
    """
    if device.type != "cuda":
        raise ValueError(
            f"precision: fp8 needs a CUDA GPU with compute capability >= 8.9 (Ada/Hopper), got device {device}; "
            "use precision: bf16 (or fp32) on this device"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ValueError(
            f"precision: fp8 needs compute capability >= 8.9 (Ada/Hopper), got {capability[0]}.{capability[1]} "
            f"on {name}; use precision: bf16"
        )


def float8_config() -> "AOBaseConfig":
    """torchao's dynamic float8 (e4m3) activation + weight config with per-row scales."""
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
        )
    except ImportError as err:
        raise ValueError("precision: fp8 needs torchao (pip install torchao)") from err
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def pipeline_quantization_config(transformer: bool, text_encoder_2: bool) -> "PipelineQuantizationConfig | None":
    """The ``quantization_config`` for ``FluxPipeline.from_pretrained`` (None when nothing is fp8).

    Args:
        transformer: quantize the FLUX transformer to float8.
        text_encoder_2: quantize the T5 encoder to float8.
    """
    from diffusers import PipelineQuantizationConfig
    from diffusers import TorchAoConfig as DiffusersTorchAoConfig
    from transformers import TorchAoConfig as TransformersTorchAoConfig

    mapping: dict[str, Any] = {}
    if transformer:
        mapping["transformer"] = DiffusersTorchAoConfig(float8_config())
    if text_encoder_2:
        mapping["text_encoder_2"] = TransformersTorchAoConfig(float8_config())
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def is_float8_quantized(module: torch.nn.Module) -> bool:
    """Whether ``module``'s linear layers already hold torchao float8 weights."""
    from torchao.quantization import Float8Tensor

    return any(isinstance(m.weight, Float8Tensor) for m in module.modules() if isinstance(m, torch.nn.Linear))


def quantize_float8_(module: torch.nn.Module) -> None:
    """Quantize every ``nn.Linear`` of ``module`` to float8 in place (idempotent).

    Uses the same config object as the ``from_pretrained`` path, so random and real weights run
    the same kernels.
    """
    from torchao.quantization import quantize_

    if is_float8_quantized(module):
        logger.info("%s is already float8; not quantizing again", type(module).__name__)
        return
    quantize_(module, float8_config())
