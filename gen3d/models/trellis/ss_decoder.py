"""TRELLIS's sparse-structure decoder: a dense 3D conv net from the 8-channel 16^3 latent to 64^3
occupancy logits (a voxel is occupied where its logit is positive).

Attribute names are the checkpoint's (``ss_dec_conv3d_16l8_fp16``): ``input_layer``,
``middle_block.N.*``, ``blocks.N.*`` (residual blocks, with an upsampling block after each
resolution but the last), ``out_layer.{0,2}``.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gen3d.models.trellis.layers import FloatLayerNorm
from gen3d.models.trellis.release_args import merged_args

#: The reference constructor's defaults, for checkpoint "args" that leave a key out.
_REFERENCE_DEFAULTS: dict[str, Any] = {"num_res_blocks_middle": 2, "norm_type": "layer", "use_fp16": False}
_REQUIRED = ("out_channels", "latent_channels", "num_res_blocks", "channels")
#: eps of nn.LayerNorm's default, which the reference's channel layer norm keeps.
NORM_EPS = 1e-5


@dataclass(frozen=True)
class SparseStructureDecoderConfig:
    """Hyperparameters of ``SparseStructureDecoder`` (names as in the checkpoint JSON "args").

    Attributes:
        out_channels: output channels (1: occupancy logits).
        latent_channels: latent channels in.
        num_res_blocks: residual blocks per resolution.
        channels: width per resolution, coarsest first; each step after the first doubles the side.
        num_res_blocks_middle: residual blocks at the coarsest resolution, before ``blocks``.
        use_fp16: the checkpoint's training precision flag; informational here.
    """

    out_channels: int = 1
    latent_channels: int = 8
    num_res_blocks: int = 2
    channels: tuple[int, ...] = field(default=(512, 128, 32))
    num_res_blocks_middle: int = 2
    use_fp16: bool = True

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels: expected at least one width, got none")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def upscale(self) -> int:
        """Output side over input side: 2 per resolution step."""
        return 2 ** (len(self.channels) - 1)

    @classmethod
    def official(cls) -> "SparseStructureDecoderConfig":
        """``ss_dec_conv3d_16l8_fp16`` of TRELLIS-image-large."""
        return cls()

    @classmethod
    def tiny(cls) -> "SparseStructureDecoderConfig":
        """The same code path (three resolutions, two upsamplings) at toy widths, for CPU tests."""
        return cls(channels=(32, 16, 8), num_res_blocks=1, num_res_blocks_middle=1, use_fp16=False)

    @classmethod
    def from_reference_dict(cls, args: dict[str, Any]) -> "SparseStructureDecoderConfig":
        """Parse the checkpoint JSON's "args" (missing keys take the reference constructor's defaults).

        Raises:
            ValueError: unknown or missing keys, or ``norm_type`` other than "layer".
        """
        merged = merged_args(args, _REQUIRED, _REFERENCE_DEFAULTS)
        if merged.pop("norm_type") != "layer":
            raise ValueError(f"args.norm_type: expected 'layer' (the only one implemented), got {args['norm_type']!r}")
        return cls(**{**merged, "channels": tuple(merged["channels"])})

    def to_reference_dict(self) -> dict[str, Any]:
        """The checkpoint JSON's "args" for this config (``from_reference_dict`` inverts it)."""
        return {**asdict(self), "channels": list(self.channels), "norm_type": "layer"}


def pixel_shuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Move channel groups into space: [B, C * f^3, X, Y, Z] -> [B, C, X * f, Y * f, Z * f].

    Channel ``c * f^3 + (i * f + j) * f + k`` lands at offset (i, j, k) of output cell c's cube.
    """
    b, folded, *sides = x.shape
    f = factor
    x = x.reshape(b, folded // f**3, f, f, f, *sides)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # B C X fi Y fj Z fk
    return x.reshape(b, folded // f**3, sides[0] * f, sides[1] * f, sides[2] * f)


class ChannelLayerNorm(FloatLayerNorm):
    """Layer norm over the channel axis of [B, C, *spatial], computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock3d(nn.Module):
    """norm -> SiLU -> conv3 -> norm -> SiLU -> conv3, plus the input (same width in and out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, eps=NORM_EPS)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = ChannelLayerNorm(channels, eps=NORM_EPS)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + x


class UpsampleBlock3d(nn.Module):
    """Double the side: conv3 to 8x the output width, then a 3D pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(nn.Module):
    """Latent [B, latent_channels, R, R, R] -> logits [B, out_channels, R * upscale, ...].

    Runs in the dtype of its parameters; the logits come back in the input's dtype.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: SparseStructureDecoderConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.channels
        self.input_layer = nn.Conv3d(cfg.latent_channels, widths[0], 3, padding=1)
        self.middle_block = nn.Sequential(*(ResBlock3d(widths[0]) for _ in range(cfg.num_res_blocks_middle)))
        blocks: list[nn.Module] = []
        for index, width in enumerate(widths):
            blocks.extend(ResBlock3d(width) for _ in range(cfg.num_res_blocks))
            if index + 1 < len(widths):
                blocks.append(UpsampleBlock3d(width, widths[index + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(
            ChannelLayerNorm(widths[-1], eps=NORM_EPS), nn.SiLU(), nn.Conv3d(widths[-1], cfg.out_channels, 3, padding=1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            z: [B, latent_channels, R, R, R] latent.

        Returns:
            [B, out_channels, R * upscale, R * upscale, R * upscale] logits, in z's dtype.
        """
        if z.dim() != 5 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"z: expected [B, {self.cfg.latent_channels}, R, R, R], got {tuple(z.shape)}")
        h = self.input_layer(z.to(self.input_layer.weight.dtype))
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h).to(z.dtype)


def occupied_voxels(logits: torch.Tensor) -> torch.Tensor:
    """Coordinates of the cells with a positive logit, as TRELLIS's sparse structure.

    Args:
        logits: [B, 1, X, Y, Z] decoder output.

    Returns:
        [N, 4] int32 (batch, x, y, z), in row-major order. The count N is data-dependent, so this
        syncs with the device.
    """
    if logits.dim() != 5 or logits.shape[1] != 1:
        raise ValueError(f"logits: expected [B, 1, X, Y, Z], got {tuple(logits.shape)}")
    return torch.argwhere(logits[:, 0] > 0).int()
