"""The dense adaLN-modulated cross-attention transformer block of TRELLIS's flow models.

One block is self-attention, then cross-attention to the image condition, then a feed-forward
network; the timestep embedding modulates (shift, scale, gate) the self-attention and feed-forward
branches. Attribute names are the checkpoints' key names (``blocks.N.self_attn.to_qkv.weight``,
``blocks.N.adaLN_modulation.1.bias``, ...).
"""

import torch
from torch import nn

from gen3d.models.trellis.layers import (
    FeedForward,
    FloatLayerNorm,
    MultiHeadAttention,
    modulate,
)

#: Epsilon of every layer norm inside TRELLIS's transformer blocks, dense and sparse.
NORM_EPS = 1e-6

#: Cross-attention keys and values of one block, each [B, S, H, D]; see ``MultiHeadAttention.project_context``.
ContextKV = tuple[torch.Tensor, torch.Tensor]


class ModulatedTransformerCrossBlock(nn.Module):
    """Self-attention, cross-attention and a feed-forward network, with adaLN from the timestep.

    ``norm1`` and ``norm3`` carry no affine parameters (the modulation replaces them); ``norm2``,
    before the unmodulated cross-attention, does.

    Args:
        channels: model width C.
        ctx_channels: condition width C_ctx.
        num_heads: attention heads H (both attentions).
        mlp_ratio: feed-forward widening.
        qk_rms_norm: per-head RMS norm of the self-attention's queries and keys.
        qk_rms_norm_cross: the same for the cross-attention.
        qkv_bias: bias on the attention input projections.
    """

    #: The attention both branches use; the sparse twin of this block swaps in its own.
    attention_class: type[MultiHeadAttention] = MultiHeadAttention

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
    ):
        super().__init__()
        self.norm1 = FloatLayerNorm(channels, elementwise_affine=False, eps=NORM_EPS)
        self.norm2 = FloatLayerNorm(channels, elementwise_affine=True, eps=NORM_EPS)
        self.norm3 = FloatLayerNorm(channels, elementwise_affine=False, eps=NORM_EPS)
        self.self_attn = self.attention_class(channels, num_heads, qk_rms_norm=qk_rms_norm, qkv_bias=qkv_bias)
        self.cross_attn = self.attention_class(
            channels, num_heads, ctx_channels=ctx_channels, cross=True, qk_rms_norm=qk_rms_norm_cross, qkv_bias=qkv_bias
        )
        self.mlp = FeedForward(channels, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def project_context(self, context: torch.Tensor) -> ContextKV:
        """This block's cross-attention keys and values: [B, S, C_ctx] -> two [B, S, H, D].

        They depend only on the condition, so a sampler computes them once per request.
        """
        return self.cross_attn.project_context(context)

    def forward(
        self,
        x: torch.Tensor,
        mod: torch.Tensor,
        context: torch.Tensor | None = None,
        context_kv: ContextKV | None = None,
    ) -> torch.Tensor:
        """Run the block on dense tokens (the sparse twin uses it for batches of equal-length items).

        Args:
            x: [B, L, C] tokens.
            mod: [B, C] timestep embedding (before the block's SiLU + Linear).
            context: [B, S, C_ctx] condition tokens; ignored when ``context_kv`` is given.
            context_kv: this block's precomputed cross-attention keys and values, each [B, S, H, D].

        Returns:
            [B, L, C].
        """
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(mod).chunk(6, dim=1)
        h = self.self_attn.attend(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + h * gate_msa.unsqueeze(1)
        x = x + self.cross_attn.attend(self.norm2(x), context, context_kv)
        h = self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))
        return x + h * gate_mlp.unsqueeze(1)

    #: The dense computation by name, for the sparse twin, whose ``forward`` takes voxels.
    forward_dense = forward
