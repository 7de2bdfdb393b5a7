"""Transformer blocks over sparse voxels: the decoders' plain block and the SLat flow's modulated one.

Key names follow TRELLIS (``norm1``, ``attn`` / ``self_attn``, ``cross_attn``, ``mlp.mlp.0``,
``adaLN_modulation.1``). Layer norms compute in float32 (``FloatLayerNorm``) and only the flow's
``norm2`` (before cross-attention) has affine parameters.
"""

import torch
from torch import nn

from .layers import FeedForward, FloatLayerNorm
from .sparse.attention import SparseMultiHeadAttention
from .sparse.tensor import SparseTensor
from .transformer import NORM_EPS, ContextKV, ModulatedTransformerCrossBlock


class SparseTransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP, no conditioning (TRELLIS's ``SparseTransformerBlock``).

    Args:
        channels: C.
        num_heads: H.
        mlp_ratio: MLP hidden width over C.
        attn_mode: "full" or "windowed".
        window_size: swin window width ("windowed").
        shift_window: swin shift in voxels ("windowed").
        qk_rms_norm: per-head RMS norm of queries and keys.
        ln_affine: affine layer norms (TRELLIS's decoders: False).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int = 0,
        qk_rms_norm: bool = False,
        ln_affine: bool = False,
    ):
        super().__init__()
        self.norm1 = FloatLayerNorm(channels, elementwise_affine=ln_affine, eps=NORM_EPS)
        self.attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            attn_mode=attn_mode,
            window_size=window_size,
            shift_window=shift_window,
            qk_rms_norm=qk_rms_norm,
        )
        self.norm2 = FloatLayerNorm(channels, elementwise_affine=ln_affine, eps=NORM_EPS)
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, C] -> [N, C] on the same voxels."""
        x = x + self.attn(x.replace(self.norm1(x.feats)))
        return x + self.mlp(self.norm2(x.feats))


class ModulatedSparseTransformerCrossBlock(ModulatedTransformerCrossBlock):
    """Self-attention, cross-attention to the image condition and MLP, with adaLN from the timestep.

    TRELLIS's ``ModulatedSparseTransformerCrossBlock`` (``share_mod=False``): the dense block's
    layers and keys (``ModulatedTransformerCrossBlock``) with sparse attention; the self-attention
    and MLP branches are shifted, scaled and gated per batch item, the cross-attention branch is not.

    Its attention is full (per batch item), so a batch whose items all have the same voxel count
    (one item, or a sampler's condition + uncondition pair: every call the pipeline makes) is a
    dense [B, L, C] batch: ``forward`` then runs the dense block's ``forward_dense``, the same
    arithmetic without the segment bookkeeping, and a pure-tensor function that ``torch.compile``
    can fuse with the voxel count L as a dynamic size (``speed.compile_latent_flow_``).
    """

    attention_class = SparseMultiHeadAttention

    def forward(  # type: ignore[override]
        self,
        x: SparseTensor,
        mod: torch.Tensor,
        context: torch.Tensor | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SparseTensor:
        """One block: ``forward_dense`` on items of equal length, else ``forward_sparse``."""
        lengths = x.batch_lengths
        if len(set(lengths)) != 1:
            return self.forward_sparse(x, mod, context, context_kv)
        tokens = x.feats.reshape(len(lengths), lengths[0], x.feats.shape[1])
        return x.replace(self.forward_dense(tokens, mod, context, context_kv).reshape(x.feats.shape))

    def forward_sparse(
        self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor | None, context_kv: ContextKV | None
    ) -> SparseTensor:
        """One block over voxel segments (items of any lengths).

        Args:
            x: [N, C] features of B batch items.
            mod: [B, C] timestep embedding.
            context: [B, S, C_ctx] condition, or None when ``context_kv`` is given.
            context_kv: this block's ``project_context(context)``, computed once per request.

        Returns:
            [N, C] on the same voxels.
        """
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(mod).chunk(6, dim=1)
        h = x.per_item(modulate_rows, self.norm1(x.feats), shift_msa, scale_msa)
        x = x + x.per_item(torch.mul, self.self_attn(x.replace(h)).feats, gate_msa)
        x = x + self.cross_attn(x.replace(self.norm2(x.feats)), context, context_kv)
        h = x.per_item(modulate_rows, self.norm3(x.feats), shift_mlp, scale_mlp)
        return x + x.per_item(torch.mul, self.mlp(h), gate_mlp)


def modulate_rows(feats: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN on rows: ``feats * (1 + scale) + shift``, shift and scale broadcast over ``feats``."""
    return feats * (1 + scale) + shift
