"""``image_tokenizer``: the DINO ViT-B/16 image encoder, with transformers <= 5.8 module names.

The module tree reproduces ``transformers.ViTModel`` as it was before the 5.9 rename, so the
official checkpoint's ``image_tokenizer.model.*`` keys load unchanged. ``vit_keys_to_legacy`` and
``vit_keys_to_modern`` translate to and from the transformers >= 5.9 names.
"""

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet statistics the DINO weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Old -> new ViT names (transformers >= 5.9), applied in order; see ``vit_keys_to_modern``.
_LEGACY_TO_MODERN = (
    (r"\.encoder\.layer\.(\d+)\.", r".layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(\.layers\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
)
_MODERN_TO_LEGACY = (
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
)


def _rename(state_dict: dict[str, torch.Tensor], rules: tuple[tuple[str, str], ...], prefix: str) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            # A leading dot lets the patterns anchor on module boundaries for bare ViT keys too.
            new_key = "." + key[len(prefix) :]
            for pattern, replacement in rules:
                new_key = re.sub(pattern, replacement, new_key)
            key = prefix + new_key[1:]
        renamed[key] = value
    return renamed


def vit_keys_to_modern(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename ViT keys from transformers <= 5.8 (``encoder.layer.N.attention.attention.query``)
    to >= 5.9 (``layers.N.attention.q_proj``). Only keys starting with ``prefix`` (for example
    ``image_tokenizer.model.``) are renamed; the rest pass through."""
    return _rename(state_dict, _LEGACY_TO_MODERN, prefix)


def vit_keys_to_legacy(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Inverse of ``vit_keys_to_modern``."""
    return _rename(state_dict, _MODERN_TO_LEGACY, prefix)


@dataclass
class ViTConfig:
    """Hyperparameters of ``facebook/dino-vitb16`` (names as in its HF ``config.json``)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p * W/p, D), row-major patches."""
        return self.projection(pixels).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.grid = cfg.image_size // cfg.patch_size
        self.patch_size = cfg.patch_size
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.hidden_size) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, self.grid**2 + 1, cfg.hidden_size) * 0.02)
        self.patch_embeddings = ViTPatchEmbeddings(cfg)

    def interpolated_positions(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a (height, width) pixel input: (1, 1 + h*w, D).

        The weights were fine-tuned with transformers 4.35, which resizes the grid bicubically
        with ``scale_factor=(h + 0.1) / grid`` rather than ``size=(h, w)``; the sampling
        positions differ slightly, so parity with the checkpoint needs the former.
        """
        rows, cols = height // self.patch_size, width // self.patch_size
        if rows == self.grid and cols == self.grid:
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        grid = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(),
            scale_factor=((rows + 0.1) / self.grid, (cols + 0.1) / self.grid),
            mode="bicubic",
            align_corners=False,
        ).to(patch_pos.dtype)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, 1 + HW/p^2, D) tokens, CLS first."""
        batch, _, height, width = pixels.shape
        tokens = self.patch_embeddings(pixels)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        return tokens + self.interpolated_positions(height, width)


class ViTSelfAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden)))
        return out.transpose(1, 2).reshape(batch, length, dim)


class ViTSelfOutput(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class ViTAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(cfg)
        self.output = ViTSelfOutput(cfg)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(hidden))


class ViTIntermediate(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class ViTOutput(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class ViTLayer(nn.Module):
    """Pre-LN encoder layer: attention and MLP, each with a residual."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTAttention(cfg)
        self.intermediate = ViTIntermediate(cfg)
        self.output = ViTOutput(cfg)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attention(self.layernorm_before(hidden))
        return hidden + self.output(self.intermediate(self.layernorm_after(hidden)))


class ViTEncoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden)
        return hidden


class ViTPooler(nn.Module):
    """Kept only because its weights are in the checkpoint; TripoSR never calls it."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class ViTModel(nn.Module):
    """ViT encoder returning ``last_hidden_state`` (after the final LayerNorm, CLS kept)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.embeddings = ViTEmbeddings(cfg)
        self.encoder = ViTEncoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.pooler = ViTPooler(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels, H and W multiples of the patch -> (B, 1 + HW/p^2, D)."""
        return self.layernorm(self.encoder(self.embeddings(pixels)))


class DINOSingleImageTokenizer(nn.Module):
    """ImageNet normalisation + DINO ViT: images in [0, 1] -> image tokens for cross-attention."""

    Config = ViTConfig

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = ViTModel(cfg)
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent float32 normalisation constants (after a meta-device load or a dtype cast)."""
        device = device if device is not None else self.model.layernorm.weight.device
        for name, values in (("image_mean", IMAGENET_MEAN), ("image_std", IMAGENET_STD)):
            tensor = torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            self.register_buffer(name, tensor, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) floats in [0, 1] -> (B, 1 + HW/p^2, D) tokens (B, 1025, 768 at 512 px)."""
        pixels = images.permute(0, 3, 1, 2)
        pixels = (pixels - self.image_mean) / self.image_std
        return self.model(pixels.to(self.model.layernorm.weight.dtype))

