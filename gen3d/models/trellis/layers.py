"""Building blocks that TRELLIS's dense and sparse networks share.

Attribute names match the official checkpoints' key suffixes (``mlp.0``, ``to_qkv``, ``gamma``, ...).
Norms compute in float32 and cast back, as the released fp16 models do, so that half-precision runs
stay close to fp32.
"""

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

#: Width of the sinusoidal timestep features fed to ``TimestepEmbedder.mlp``.
TIMESTEP_FREQUENCIES = 256
#: Longest period of the timestep and position sinusoids.
MAX_PERIOD = 10000.0
#: Config names of PyTorch's SDPA kernels (``trellis.attention``).
SDPA_BACKENDS: dict[str, SDPBackend] = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def _float_or_none(parameter: torch.Tensor | None) -> torch.Tensor | None:
    return None if parameter is None else parameter.float()


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (affine parameters too, whatever the module's dtype) and
    returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(
            x.float(), self.normalized_shape, _float_or_none(self.weight), _float_or_none(self.bias), self.eps
        )
        return normed.to(x.dtype)


class FloatGroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 (affine parameters too) and returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.group_norm(x.float(), self.num_groups, _float_or_none(self.weight), _float_or_none(self.bias), self.eps)
        return normed.to(x.dtype)


class MultiHeadRMSNorm(nn.Module):
    """Per-head RMS norm of queries or keys: unit direction times ``gamma * sqrt(head_dim)``.

    Args:
        head_dim: channels per head (D).
        heads: number of heads (H); ``gamma`` is [H, D] and broadcasts over [..., H, D].
    """

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        self.scale = head_dim**0.5
        self.gamma = nn.Parameter(torch.ones(heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


class FeedForward(nn.Module):
    """Linear -> tanh-GELU -> Linear, widening by ``mlp_ratio``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def timestep_features(t: torch.Tensor, width: int = TIMESTEP_FREQUENCIES) -> torch.Tensor:
    """Sinusoidal features of (fractional) timesteps: cosines then sines, geometric frequencies.

    Args:
        t: [B] timesteps (TRELLIS feeds ``1000 * t`` for t in [0, 1]).
        width: feature width; an odd width gets one zero column.

    Returns:
        [B, width] float32.
    """
    half = width // 2
    frequencies = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if width % 2:
        features = F.pad(features, (0, 1))
    return features


class TimestepEmbedder(nn.Module):
    """Timestep -> model width: sinusoidal features, then Linear -> SiLU -> Linear."""

    def __init__(self, channels: int, frequencies: int = TIMESTEP_FREQUENCIES):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.frequencies).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


def position_embedding(positions: torch.Tensor, channels: int) -> torch.Tensor:
    """Absolute sin/cos embedding of integer grid positions, one block of sines and cosines per axis.

    Args:
        positions: [N, A] grid coordinates (A axes, 3 for voxels).
        channels: output width; columns beyond ``A * 2 * (channels // A // 2)`` are zero.

    Returns:
        [N, channels] float32: for each axis in turn, sin of every frequency, then cos.
    """
    count, axes = positions.shape
    half = channels // axes // 2
    frequencies = 1.0 / MAX_PERIOD ** (torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.reshape(-1).float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(count, -1)
    return F.pad(embedding, (0, channels - embedding.shape[1]))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample [B, C] shift and scale over [B, L, C]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


@contextlib.contextmanager
def sdpa_priority(backends: Sequence[str]) -> Iterator[None]:
    """Within the block, SDPA may use only ``backends`` (``SDPA_BACKENDS`` names), tried in this
    order; an empty list leaves PyTorch's own choice. The choice is made when a kernel is picked,
    so a compiled graph or CUDA graph keeps the one it was traced or captured under."""
    if not backends:
        yield
        return
    with sdpa_kernel([SDPA_BACKENDS[name] for name in backends], set_priority=True):
        yield


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention on [B, L, H, D] queries and [B, S, H, D] keys/values -> [B, L, H, D]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with optional per-head RMS norm of queries and keys.

    The projections are split from the attention itself, so that sparse attention (segments,
    windows) reuses them, and so that a cross-attention's keys and values, which depend only on the
    condition, can be computed once per request (``project_context``) and reused at every step.

    Args:
        channels: model width C (= heads x head_dim).
        num_heads: H.
        ctx_channels: context width for cross-attention (default C).
        cross: cross-attention (``to_q`` + ``to_kv``) instead of self-attention (``to_qkv``).
        qk_rms_norm: apply ``q_rms_norm`` / ``k_rms_norm`` per head.
        qkv_bias: bias on the input projections.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        cross: bool = False,
        qk_rms_norm: bool = False,
        qkv_bias: bool = True,
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels must be a multiple of num_heads, got {channels} and {num_heads}")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.cross = cross
        if cross:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(ctx_channels or channels, 2 * channels, bias=qkv_bias)
        else:
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.qk_rms_norm = qk_rms_norm
        self.to_out = nn.Linear(channels, channels)

    def _heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], parts, self.num_heads, self.head_dim)

    def project_self(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[..., L, C] -> q, k, v, each [..., L, H, D], queries and keys normed if configured."""
        q, k, v = self._heads(self.to_qkv(x), 3).unbind(dim=-3)
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return q, k, v

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-attention queries: [..., L, C] -> [..., L, H, D]."""
        q = self._heads(self.to_q(x), 1).squeeze(-3)
        return self.q_rms_norm(q) if self.qk_rms_norm else q

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values: [..., S, C_ctx] -> two [..., S, H, D]."""
        k, v = self._heads(self.to_kv(context), 2).unbind(dim=-3)
        return (self.k_rms_norm(k) if self.qk_rms_norm else k), v

    def output(self, heads: torch.Tensor) -> torch.Tensor:
        """[..., L, H, D] attention result -> [..., L, C] through ``to_out``."""
        return self.to_out(heads.flatten(-2))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Dense attention on [B, L, C]; cross-attention takes ``context`` [B, S, C_ctx] or its
        precomputed ``context_kv``."""
        if not self.cross:
            q, k, v = self.project_self(x)
        else:
            q = self.project_query(x)
            k, v = context_kv if context_kv is not None else self.project_context(context)
        return self.output(attention(q, k, v))

    #: Dense attention by name, for the sparse subclass, whose ``forward`` takes voxels.
    attend = forward
