"""DINOv2 ViT-L/14 with 4 registers, TRELLIS's image conditioner.

The module tree reproduces the torch-hub model ``dinov2_vitl14_reg`` (facebookresearch/dinov2), so
the hub checkpoint ``dinov2_vitl14_reg4_pretrain.pth`` loads strictly with
``torch.load(weights_only=True)``: ``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``,
``patch_embed.proj.*``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}``, ``norm.*``.

Hugging Face layout: the same weights are published as ``facebook/dinov2-with-registers-large``
(``model.safetensors``, transformers' names, query/key/value split). Real mode loads that file with
safetensors (no pickle) and renames it with ``hf_to_hub``; ``hub_to_hf`` is the inverse.

TRELLIS's condition (``encode``): ImageNet-normalise a [B, 3, 518, 518] image in [0, 1], run the
ViT, take every token before the final norm (CLS, 4 registers, 37 x 37 patches: 1374), and layer-norm
them over channels without affine parameters.
"""

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gen3d.models.trellis.layers import FloatLayerNorm, attention

#: ImageNet statistics the DINOv2 weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Hugging Face repository holding the same weights as safetensors.
HF_REPO = "facebook/dinov2-with-registers-large"

#: Hub name -> HF name for the keys that only change name ("{i}": block index).
_HUB_TO_HF = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
    "blocks.{i}.norm1.weight": "encoder.layer.{i}.norm1.weight",
    "blocks.{i}.norm1.bias": "encoder.layer.{i}.norm1.bias",
    "blocks.{i}.norm2.weight": "encoder.layer.{i}.norm2.weight",
    "blocks.{i}.norm2.bias": "encoder.layer.{i}.norm2.bias",
    "blocks.{i}.attn.proj.weight": "encoder.layer.{i}.attention.output.dense.weight",
    "blocks.{i}.attn.proj.bias": "encoder.layer.{i}.attention.output.dense.bias",
    "blocks.{i}.ls1.gamma": "encoder.layer.{i}.layer_scale1.lambda1",
    "blocks.{i}.ls2.gamma": "encoder.layer.{i}.layer_scale2.lambda1",
    "blocks.{i}.mlp.fc1.weight": "encoder.layer.{i}.mlp.fc1.weight",
    "blocks.{i}.mlp.fc1.bias": "encoder.layer.{i}.mlp.fc1.bias",
    "blocks.{i}.mlp.fc2.weight": "encoder.layer.{i}.mlp.fc2.weight",
    "blocks.{i}.mlp.fc2.bias": "encoder.layer.{i}.mlp.fc2.bias",
}
_HF_TO_HUB = {hf: hub for hub, hf in _HUB_TO_HF.items()}
#: The fused projection is split into these three, in this order, along the output axis.
_QKV_PARTS = ("query", "key", "value")
_BLOCK_INDEX = re.compile(r"^(blocks|encoder\.layer)\.(\d+)\.")
#: transformers >= 5 names its modules differently and renames the Hub file's keys on load; a file
#: saved by it may carry these newer names, which are mapped back to the Hub file's first.
_MODERN_TO_STORED = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
)


@dataclass(frozen=True)
class DinoV2Config:
    """Hyperparameters of the ViT (names after the hub constructor's keywords).

    Attributes:
        embed_dim: width C.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward widening.
        patch_size: patch side in pixels.
        img_size: the training image side; the position embedding has (img_size / patch_size)^2 + 1 rows.
        num_register_tokens: register tokens inserted after CLS.
        interpolate_antialias / interpolate_offset: how the position embedding is resized for other
            image sizes (the registers model: antialiased bicubic to the exact grid, offset 0).
        layer_norm_eps: eps of the blocks' and the final norm.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    img_size: int = 518
    num_register_tokens: int = 4
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim: expected a multiple of num_heads {self.num_heads}, got {self.embed_dim}")

    @property
    def grid(self) -> int:
        """Patches per side at ``img_size`` (37 at full size)."""
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens at ``img_size``: CLS + registers + patches (1374 at full size)."""
        return 1 + self.num_register_tokens + self.grid**2

    @classmethod
    def official(cls) -> "DinoV2Config":
        """``dinov2_vitl14_reg``: 304,372,736 parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> "DinoV2Config":
        """ViT-L's structure (registers, layer scale, 14 px patches, 518 px) at toy width and depth."""
        return cls(embed_dim=64, depth=2, num_heads=4)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "DinoV2Config":
        """The ViT described by a Hugging Face ``Dinov2WithRegisters`` ``config.json``.

        Raises:
            ValueError: another model type, or a variant we do not implement (SwiGLU feed-forward).
        """
        if config.get("model_type") != "dinov2_with_registers":
            raise ValueError(f"model_type: expected 'dinov2_with_registers', got {config.get('model_type')!r}")
        if config.get("use_swiglu_ffn", False):
            raise ValueError("use_swiglu_ffn: the SwiGLU feed-forward (ViT-g) is not implemented, got true")
        return cls(
            embed_dim=config["hidden_size"],
            depth=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            mlp_ratio=config.get("mlp_ratio", 4.0),
            patch_size=config["patch_size"],
            img_size=config["image_size"],
            num_register_tokens=config["num_register_tokens"],
            layer_norm_eps=config.get("layer_norm_eps", 1e-6),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` fields ``from_hf_config`` reads."""
        return {
            "model_type": "dinov2_with_registers",
            "hidden_size": self.embed_dim,
            "num_hidden_layers": self.depth,
            "num_attention_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "patch_size": self.patch_size,
            "image_size": self.img_size,
            "num_register_tokens": self.num_register_tokens,
            "layer_norm_eps": self.layer_norm_eps,
            "use_swiglu_ffn": False,
        }


def imagenet_normalize(image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> (image - mean) / std per channel."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device)[:, None, None]
    return (image - mean) / std


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: [B, 3, H, W] -> [B, (H / p) * (W / p), C], rows first."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(image).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).unbind(dim=2)
        return self.proj(attention(q, k, v).reshape(b, n, c))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma``."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer-scaled residual branches."""

    def __init__(self, cfg: DinoV2Config):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = FloatLayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = FloatLayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """The DINOv2 ViT (hub module names); ``encode`` gives TRELLIS's condition tokens.

    Runs in the dtype of its parameters; norms compute in float32.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: DinoV2Config):
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid**2 + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        # Used only for masked-image training; kept so that the checkpoint loads strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        # Also unused by TRELLIS (it takes the tokens before this norm); part of the checkpoint.
        self.norm = FloatLayerNorm(dim, eps=cfg.layer_norm_eps)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """The position embedding for a rows x cols patch grid: [1, 1 + rows * cols, C].

        At the training grid it is ``pos_embed`` itself; otherwise the patch part is resized with
        bicubic interpolation in float32, as the hub model does (by exact size when
        ``interpolate_offset`` is 0, else by the scale (n + offset) / grid).
        """
        grid, cfg = self.cfg.grid, self.cfg
        if rows == cols == grid:
            return self.pos_embed
        table = self.pos_embed.float()
        patches = table[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)  # 1 C grid grid
        if cfg.interpolate_offset:
            scale = ((rows + cfg.interpolate_offset) / grid, (cols + cfg.interpolate_offset) / grid)
            resized = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=cfg.interpolate_antialias)
        else:
            resized = F.interpolate(patches, size=(rows, cols), mode="bicubic", antialias=cfg.interpolate_antialias)
        if resized.shape[-2:] != (rows, cols):
            raise ValueError(f"image: the position grid resized to {tuple(resized.shape[-2:])}, not {(rows, cols)}")
        resized = resized.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([table[:, :1], resized], dim=1).to(self.pos_embed.dtype)

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Embedded input tokens: [B, 3, H, W] normalised image -> [B, 1 + R + N, C] as
        (CLS, registers, patches); position embeddings on CLS and patches only."""
        b, _, height, width = image.shape
        p = self.cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"image: expected sides that are multiples of {p}, got {height} x {width}")
        patches = self.patch_embed(image.to(self.pos_embed.dtype))
        x = torch.cat([self.cls_token.expand(b, -1, -1), patches], dim=1)
        x = x + self.position_embedding(height // p, width // p)
        return torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block, before the final norm (the hub's ``x_prenorm``).

        Args:
            image: [B, 3, H, W] ImageNet-normalised image.

        Returns:
            [B, 1 + R + (H / p) * (W / p), C].
        """
        x = self.tokens(image)
        for block in self.blocks:
            x = block(x)
        return x

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """TRELLIS's image condition.

        Args:
            image: [B, 3, 518, 518] RGB in [0, 1] (any multiple of the patch size works).

        Returns:
            [B, 1374, 1024] tokens at full size (CLS, registers, patches), each layer-normed over
            channels without affine parameters, in the parameters' dtype.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected [B, 3, H, W], got {tuple(image.shape)}")
        features = self.forward_features(imagenet_normalize(image.float()))
        return F.layer_norm(features.float(), features.shape[-1:]).to(features.dtype)

    forward = encode


def _rename(key: str, table: dict[str, str]) -> str | None:
    """``key`` through ``table``, whose entries may hold a "{i}" block index; None if absent."""
    match = _BLOCK_INDEX.match(key)
    if match is None:
        return table.get(key)
    index = match.group(2)
    generic = key.replace(f"{match.group(1)}.{index}.", f"{match.group(1)}.{{i}}.", 1)
    renamed = table.get(generic)
    return renamed.format(i=index) if renamed is not None else None


def hf_to_hub(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2WithRegistersModel`` keys -> hub keys (this module's).

    Takes the names stored in the Hub's ``model.safetensors`` (``attention.attention.query``, ...)
    and also those of transformers >= 5 (``attention.q_proj``, ...). Each block's separate query,
    key and value projections are concatenated into ``attn.qkv`` in that order.

    Raises:
        ValueError: a key that belongs to neither layout, or a block missing part of its q/k/v.
    """
    converted, pending, unknown = {}, {}, []
    for key, value in state_dict.items():
        for modern, stored in _MODERN_TO_STORED:
            key = key.replace(modern, stored)
        parts = re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", key)
        if parts:
            block, part, kind = parts.groups()
            pending.setdefault((block, kind), {})[part] = value
            continue
        renamed = _rename(key, _HF_TO_HUB)
        if renamed is None:
            unknown.append(key)
        else:
            converted[renamed] = value
    if unknown:
        raise ValueError(f"state_dict: keys outside the {HF_REPO} layout: {sorted(unknown)}")
    for (block, kind), parts in pending.items():
        if set(parts) != set(_QKV_PARTS):
            raise ValueError(f"state_dict: block {block} {kind} has {sorted(parts)}, expected {list(_QKV_PARTS)}")
        converted[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts[name] for name in _QKV_PARTS])
    return converted


def hub_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``hf_to_hub``: hub keys -> Hugging Face keys, ``attn.qkv`` split in three.

    Raises:
        ValueError: a key outside the hub layout.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        fused = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)
        if fused:
            block, kind = fused.groups()
            for name, part in zip(_QKV_PARTS, value.chunk(3), strict=True):
                converted[f"encoder.layer.{block}.attention.attention.{name}.{kind}"] = part
            continue
        renamed = _rename(key, _HUB_TO_HF)
        if renamed is None:
            unknown.append(key)
        else:
            converted[renamed] = value
    if unknown:
        raise ValueError(f"state_dict: keys outside the dinov2_vitl14_reg layout: {sorted(unknown)}")
    return converted


def to_hub_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Either layout -> hub keys: Hugging Face files (recognised by ``embeddings.cls_token``) are
    renamed with ``hf_to_hub``; hub state dicts pass through."""
    return hf_to_hub(state_dict) if "embeddings.cls_token" in state_dict else state_dict
