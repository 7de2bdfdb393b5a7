"""TRELLIS's structured-latent flow: the velocity of sparse voxel latents, conditioned on an image.

Shape of the network (``SLatFlowModel``, key prefixes in brackets):
``input_layer`` lifts the latents to ``io_block_channels[0]``; ``input_blocks`` (sparse conv
ResBlocks) end in a 2x pooling to ``model_channels``; absolute position embeddings of the pooled
voxels are added; ``blocks`` are modulated transformer blocks with image cross-attention;
``out_blocks`` unpool back, each taking the matching input block's output as a skip; a plain layer
norm and ``out_layer`` give the velocity.

A sampler calls the model 25 times on the same voxels (cond and uncond as one batch of two): the
pooling map, the position embeddings and the convolution neighbour tables are cached on the input's
coordinates, and ``project_context`` gives every block's cross-attention K/V once per request.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FloatLayerNorm, TimestepEmbedder, position_embedding
from .release_args import head_count, merged_args
from .sparse.conv import SparseConv3d, SparseLinear
from .sparse.spatial import SparseDownsample, SparseUpsample
from .sparse.tensor import SparseTensor
from .sparse_transformer import (
    NORM_EPS,
    ModulatedSparseTransformerCrossBlock,
    modulate_rows,
)

ContextKV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SLatFlowConfig:
    """SLatFlowModel hyperparameters, named as in the checkpoint JSON's ``args``.

    Attributes:
        resolution: latent grid size (voxel coordinates lie in [0, resolution)).
        in_channels / out_channels: latent width.
        model_channels: transformer width C.
        cond_channels: image-condition width.
        num_blocks: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over C.
        patch_size: pooling factor before the transformer (2 ** len(io_block_channels)).
        num_io_res_blocks: ResBlocks per input / output stage.
        io_block_channels: width of each input / output stage.
        pe_mode: position embedding; only "ape" (absolute) is implemented.
        qk_rms_norm / qk_rms_norm_cross: RMS norm of self- / cross-attention queries and keys.
        use_fp16: the release ran the torso in half precision (informational here).
    """

    resolution: int = 64
    in_channels: int = 8
    out_channels: int = 8
    model_channels: int = 1024
    cond_channels: int = 1024
    num_blocks: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 2
    num_io_res_blocks: int = 2
    io_block_channels: tuple[int, ...] = (128,)
    pe_mode: str = "ape"
    qk_rms_norm: bool = True
    qk_rms_norm_cross: bool = False
    use_fp16: bool = True

    def __post_init__(self) -> None:
        self.io_block_channels = tuple(self.io_block_channels)
        if self.pe_mode != "ape":
            raise ValueError(f"pe_mode: expected 'ape', got {self.pe_mode!r}")
        if self.patch_size != 2 ** len(self.io_block_channels):
            raise ValueError(
                f"patch_size: expected 2 ** len(io_block_channels) = {2 ** len(self.io_block_channels)}, got {self.patch_size}"
            )
        if self.num_io_res_blocks < 1:
            raise ValueError(f"num_io_res_blocks: expected >= 1, got {self.num_io_res_blocks}")

    @classmethod
    def official(cls) -> "SLatFlowConfig":
        """``slat_flow_img_dit_L_64l8p2_fp16`` of TRELLIS-image-large."""
        return cls()

    @classmethod
    def tiny(cls) -> "SLatFlowConfig":
        """The same layers at toy widths and depth, for CPU tests."""
        return cls(model_channels=64, cond_channels=32, num_blocks=2, num_heads=4, io_block_channels=(16,))

    @classmethod
    def from_reference_dict(cls, args: dict[str, Any]) -> "SLatFlowConfig":
        """From a checkpoint JSON's ``args``; training-only switches must keep their inference values."""
        fixed = {"share_mod": False, "use_skip_connection": True}
        defaults = {f.name: f.default for f in fields(cls)} | fixed | {"num_head_channels": 64}
        merged = merged_args(args, (), defaults)
        for name, value in fixed.items():
            if merged.pop(name) != value:
                raise ValueError(f"args.{name}: only {value} is implemented, got {merged}")
        merged["num_heads"] = head_count(merged, cls.model_channels)
        del merged["num_head_channels"]
        return cls(**merged)

    def to_reference_dict(self) -> dict[str, Any]:
        """The checkpoint JSON's ``args``."""
        values = asdict(self)
        values["io_block_channels"] = list(self.io_block_channels)
        return values


class SparseResBlock3d(nn.Module):
    """Sparse conv ResBlock with timestep scale/shift, optionally pooling or unpooling first.

    Args:
        channels: input width.
        emb_channels: timestep embedding width.
        out_channels: output width (default ``channels``).
        downsample / upsample: 2x pooling / unpooling before the convolutions (and the skip).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        downsample: bool = False,
        upsample: bool = False,
    ):
        super().__init__()
        if downsample and upsample:
            raise ValueError("downsample and upsample: expected at most one, got both")
        out_channels = out_channels or channels
        self.norm1 = FloatLayerNorm(channels, elementwise_affine=True, eps=NORM_EPS)
        self.norm2 = FloatLayerNorm(out_channels, elementwise_affine=False, eps=NORM_EPS)
        self.conv1 = SparseConv3d(channels, out_channels, 3)
        self.conv2 = SparseConv3d(out_channels, out_channels, 3)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = SparseLinear(channels, out_channels) if channels != out_channels else nn.Identity()
        self.updown = SparseDownsample(2) if downsample else SparseUpsample(2) if upsample else None

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        """[N, C_in] and a [B, C_emb] embedding -> [N', C_out] (N' != N after pooling / unpooling)."""
        scale, shift = self.emb_layers(emb).to(x.dtype).chunk(2, dim=1)
        if self.updown is not None:
            x = self.updown(x)
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        h = x.per_item(modulate_rows, self.norm2(h.feats), shift, scale)
        h = self.conv2(x.replace(F.silu(h)))
        return h + self.skip_connection(x)


class SLatFlowModel(nn.Module):
    """TRELLIS's ``SLatFlowModel`` (see the module docstring); keys match the official checkpoint."""

    def __init__(self, cfg: SLatFlowConfig):
        super().__init__()
        self.cfg = cfg
        width, stages = cfg.model_channels, list(cfg.io_block_channels)
        self.t_embedder = TimestepEmbedder(width)
        self.input_layer = SparseLinear(cfg.in_channels, stages[0])
        self.input_blocks = nn.ModuleList()
        for channels, next_channels in zip(stages, stages[1:] + [width]):
            self.input_blocks.extend(SparseResBlock3d(channels, width) for _ in range(cfg.num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(channels, width, next_channels, downsample=True))
        self.blocks = nn.ModuleList(
            ModulatedSparseTransformerCrossBlock(
                width, cfg.cond_channels, cfg.num_heads, cfg.mlp_ratio, cfg.qk_rms_norm, cfg.qk_rms_norm_cross
            )
            for _ in range(cfg.num_blocks)
        )
        # Output stages mirror the input ones; every block's input is concatenated with a skip.
        self.out_blocks = nn.ModuleList()
        for channels, previous in zip(reversed(stages), [width] + list(reversed(stages[1:]))):
            self.out_blocks.append(SparseResBlock3d(2 * previous, width, channels, upsample=True))
            self.out_blocks.extend(
                SparseResBlock3d(2 * channels, width, channels) for _ in range(cfg.num_io_res_blocks - 1)
            )
        self.out_layer = SparseLinear(stages[0], cfg.out_channels)

    @property
    def torso_dtype(self) -> torch.dtype:
        """The blocks' dtype (the release keeps input and output layers in fp32, the rest in fp16)."""
        return self.blocks[0].adaLN_modulation[1].weight.dtype

    def project_context(self, cond: torch.Tensor) -> ContextKV:
        """Every block's cross-attention keys and values of ``cond`` [B, S, C_cond], once per request."""
        cond = cond.to(self.torso_dtype)
        return [block.project_context(cond) for block in self.blocks]

    def forward(
        self,
        x: SparseTensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        context_kv: ContextKV | None = None,
    ) -> SparseTensor:
        """The flow velocity at ``x``.

        Args:
            x: [N, in_channels] noisy latents of B batch items.
            t: [B] timesteps as the model was trained on them (TRELLIS's samplers pass 1000 * t).
            cond: [B, S, cond_channels] image tokens; or None when ``context_kv`` is given.
            context_kv: ``project_context(cond)``.

        Returns:
            [N, out_channels] velocity on x's voxels, in x's dtype.
        """
        self._check_inputs(x, t, cond, context_kv)
        dtype = self.torso_dtype
        h = self.input_layer(x.to(self.input_layer.weight.dtype)).to(dtype)
        emb = self.t_embedder(t).to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h.feats)
        h = h + self._position_embedding(h, dtype)
        if context_kv is None:
            context_kv = self.project_context(cond)
        for block, kv in zip(self.blocks, context_kv):
            h = block(h, emb, context_kv=kv)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            h = block(h.replace(torch.cat([h.feats, skip], dim=1)), emb)
        feats = F.layer_norm(h.feats.float(), h.feats.shape[-1:])
        return self.out_layer(h.replace(feats.to(self.out_layer.weight.dtype))).to(x.dtype)

    def _position_embedding(self, h: SparseTensor, dtype: torch.dtype) -> torch.Tensor:
        width = self.cfg.model_channels
        return h.cache.get_or_build(("ape", width, dtype), lambda: position_embedding(h.coords[:, 1:], width).to(dtype))

    def _check_inputs(
        self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor | None, context_kv: ContextKV | None
    ) -> None:
        if x.feats.dim() != 2 or x.feats.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x.feats: expected [N, {self.cfg.in_channels}], got {tuple(x.feats.shape)}")
        if t.shape != (x.batch_size,):
            raise ValueError(f"t: expected [{x.batch_size}] (one per batch item), got {tuple(t.shape)}")
        if context_kv is None:
            if (
                cond is None
                or cond.dim() != 3
                or cond.shape[0] != x.batch_size
                or cond.shape[2] != self.cfg.cond_channels
            ):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond: expected [{x.batch_size}, S, {self.cfg.cond_channels}], got {got}")
        elif len(context_kv) != len(self.blocks):
            raise ValueError(f"context_kv: expected {len(self.blocks)} (k, v) pairs, got {len(context_kv)}")
