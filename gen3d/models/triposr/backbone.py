"""``backbone``: the triplane transformer (self-attention over plane tokens, cross-attention to the image).

Module names and shapes are those of diffusers' ``BasicTransformerBlock`` inside a
``Transformer2DModel`` with a linear projection, so the official keys load unchanged.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Transformer1DConfig:
    """Args: in_channels: token channels; num_attention_heads x attention_head_dim: inner width
    (must equal in_channels); num_layers: blocks; cross_attention_dim: image-token channels;
    norm_num_groups: GroupNorm groups at the input."""

    in_channels: int = 1024
    num_attention_heads: int = 16
    attention_head_dim: int = 64
    num_layers: int = 16
    cross_attention_dim: int = 768
    norm_num_groups: int = 32


class Attention(nn.Module):
    """Multi-head attention without q/k/v bias; ``to_out`` is a list so its Linear is key ``to_out.0``."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, hidden: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, dim), context (B, M, context_dim) or None for self-attention -> (B, N, dim)."""
        context = hidden if context is None else context

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(hidden)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear to 2x width; first half is the value, second half the exact-GELU gate."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(hidden).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net``: GEGLU, (dropout slot, kept for key index 2), Linear."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](hidden))


class BasicTransformerBlock(nn.Module):
    """Pre-LN block: self-attention, cross-attention to the (un-normalised) context, GEGLU FF."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attn1(self.norm1(hidden))
        hidden = hidden + self.attn2(self.norm2(hidden), context)
        return hidden + self.ff(self.norm3(hidden))


class Transformer1D(nn.Module):
    """GroupNorm -> proj_in -> blocks -> proj_out, plus the un-normalised input tokens."""

    Config = Transformer1DConfig

    def __init__(self, cfg: Transformer1DConfig) -> None:
        super().__init__()
        inner = cfg.num_attention_heads * cfg.attention_head_dim
        if inner != cfg.in_channels:
            raise ValueError(
                f"backbone: num_attention_heads * attention_head_dim must equal in_channels "
                f"({cfg.in_channels}), got {cfg.num_attention_heads} x {cfg.attention_head_dim} = {inner}"
            )
        self.cfg = cfg
        self.norm = nn.GroupNorm(cfg.norm_num_groups, cfg.in_channels, eps=1e-6)
        self.proj_in = nn.Linear(cfg.in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, cfg.num_attention_heads, cfg.attention_head_dim, cfg.cross_attention_dim)
            for _ in range(cfg.num_layers)
        )
        self.proj_out = nn.Linear(inner, cfg.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Tokens (B, C, N) attending to context (B, M, cross_attention_dim) -> (B, C, N)."""
        hidden = self.proj_in(self.norm(tokens).transpose(1, 2))
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        return self.proj_out(hidden).transpose(1, 2) + tokens
