"""TRELLIS's sparse-structure flow: a dense transformer that predicts the flow velocity of the 16^3
occupancy latent, conditioned on DINOv2 image tokens.

Attribute names are the checkpoint's (``ss_flow_img_dit_L_16l8_fp16``): ``t_embedder.mlp.*``,
``pos_emb`` (a persistent buffer the checkpoint stores), ``input_layer``, ``blocks.N.*``,
``out_layer``. Shapes are fixed per config (4096 tokens at full size) and ``forward`` has no
data-dependent branch or host sync, so it can be compiled and captured in a CUDA graph per step.
"""

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gen3d.models.trellis.layers import TimestepEmbedder, position_embedding
from gen3d.models.trellis.release_args import head_count, merged_args
from gen3d.models.trellis.transformer import ContextKV, ModulatedTransformerCrossBlock

#: The reference constructor's defaults, for checkpoint "args" that leave a key out.
_REFERENCE_DEFAULTS: dict[str, Any] = {
    "num_heads": None,
    "num_head_channels": 64,
    "mlp_ratio": 4,
    "patch_size": 2,
    "pe_mode": "ape",
    "use_fp16": False,
    "share_mod": False,
    "qk_rms_norm": False,
    "qk_rms_norm_cross": False,
}
_REQUIRED = ("resolution", "in_channels", "model_channels", "cond_channels", "out_channels", "num_blocks")


@dataclass(frozen=True)
class SparseStructureFlowConfig:
    """Hyperparameters of ``SparseStructureFlowModel`` (names as in the checkpoint JSON "args").

    Attributes:
        resolution: latent grid side R (the flow's input is [B, in_channels, R, R, R]).
        in_channels / out_channels: latent channels in and out.
        model_channels: transformer width C.
        cond_channels: condition width (DINOv2's 1024).
        num_blocks: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward widening.
        patch_size: side p of the cubes folded into one token ((R / p)^3 tokens).
        qk_rms_norm / qk_rms_norm_cross: per-head RMS norm of self- / cross-attention queries and keys.
        use_fp16: the checkpoint's training precision flag; informational here (the caller picks the
            dtype by casting the module).
    """

    resolution: int = 16
    in_channels: int = 8
    out_channels: int = 8
    model_channels: int = 1024
    cond_channels: int = 1024
    num_blocks: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 1
    qk_rms_norm: bool = True
    qk_rms_norm_cross: bool = False
    use_fp16: bool = True

    def __post_init__(self) -> None:
        if self.resolution % self.patch_size:
            raise ValueError(f"resolution: expected a multiple of patch_size {self.patch_size}, got {self.resolution}")
        if self.model_channels % self.num_heads:
            raise ValueError(
                f"model_channels: expected a multiple of num_heads {self.num_heads}, got {self.model_channels}"
            )

    @property
    def grid(self) -> int:
        """Tokens per axis, R / p."""
        return self.resolution // self.patch_size

    @classmethod
    def official(cls) -> "SparseStructureFlowConfig":
        """``ss_flow_img_dit_L_16l8_fp16`` of TRELLIS-image-large."""
        return cls()

    @classmethod
    def tiny(cls) -> "SparseStructureFlowConfig":
        """The same code path at toy sizes (patch 2 so that patchify is exercised), for CPU tests."""
        return cls(
            resolution=8, model_channels=64, cond_channels=48, num_blocks=2, num_heads=4, patch_size=2, use_fp16=False
        )

    @classmethod
    def from_reference_dict(cls, args: dict[str, Any]) -> "SparseStructureFlowConfig":
        """Parse the checkpoint JSON's "args" (missing keys take the reference constructor's defaults).

        Raises:
            ValueError: unknown keys, missing required keys, or options we do not implement
                (``pe_mode`` other than "ape", ``share_mod``).
        """
        merged = merged_args(args, _REQUIRED, _REFERENCE_DEFAULTS)
        if merged["pe_mode"] != "ape":
            raise ValueError(f"args.pe_mode: expected 'ape' (the only one implemented), got {merged['pe_mode']!r}")
        if merged["share_mod"]:
            raise ValueError("args.share_mod: expected false (the only one implemented), got true")
        return cls(
            **{key: merged[key] for key in _REQUIRED},
            num_heads=head_count(merged, merged["model_channels"]),
            mlp_ratio=float(merged["mlp_ratio"]),
            patch_size=int(merged["patch_size"]),
            qk_rms_norm=bool(merged["qk_rms_norm"]),
            qk_rms_norm_cross=bool(merged["qk_rms_norm_cross"]),
            use_fp16=bool(merged["use_fp16"]),
        )

    def to_reference_dict(self) -> dict[str, Any]:
        """The checkpoint JSON's "args" for this config (``from_reference_dict`` inverts it)."""
        return {**asdict(self), "pe_mode": "ape"}


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fold p^3 cubes into channels: [B, C, X, Y, Z] -> [B, C * p^3, X/p, Y/p, Z/p].

    Channel ``c * p^3 + (i * p + j) * p + k`` holds offset (i, j, k) of channel c in each cube, the
    order the checkpoint's ``input_layer`` was trained with.
    """
    b, c, *sides = x.shape
    p = patch_size
    x = x.reshape(b, c, sides[0] // p, p, sides[1] // p, p, sides[2] // p, p)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # B C pi pj pk X' Y' Z'
    return x.reshape(b, c * p**3, sides[0] // p, sides[1] // p, sides[2] // p)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of ``patchify``: [B, C * p^3, X', Y', Z'] -> [B, C, X' * p, Y' * p, Z' * p]."""
    b, folded, *sides = x.shape
    p = patch_size
    x = x.reshape(b, folded // p**3, p, p, p, *sides)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # B C X' pi Y' pj Z' pk
    return x.reshape(b, folded // p**3, sides[0] * p, sides[1] * p, sides[2] * p)


def grid_position_embedding(grid: int, channels: int) -> torch.Tensor:
    """Sin/cos embedding of every cell of a grid^3 lattice, x slowest: [grid^3, channels] float32."""
    axis = torch.arange(grid)
    cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return position_embedding(cells, channels)


class SparseStructureFlowModel(nn.Module):
    """Velocity of the sparse-structure latent: (x_t, 1000 t, image tokens) -> v.

    Runs in the dtype of its parameters (cast the module for bf16); inputs are cast to it and the
    velocity is returned in ``x``'s dtype. Norms compute in float32.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: SparseStructureFlowConfig):
        super().__init__()
        self.cfg = cfg
        width, cube = cfg.model_channels, cfg.patch_size**3
        self.t_embedder = TimestepEmbedder(width)
        # Persistent: the checkpoint stores it, so strict loading needs the key.
        self.register_buffer("pos_emb", grid_position_embedding(cfg.grid, width))
        self.input_layer = nn.Linear(cfg.in_channels * cube, width)
        self.blocks = nn.ModuleList(
            ModulatedTransformerCrossBlock(
                width,
                cfg.cond_channels,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qk_rms_norm=cfg.qk_rms_norm,
                qk_rms_norm_cross=cfg.qk_rms_norm_cross,
            )
            for _ in range(cfg.num_blocks)
        )
        self.out_layer = nn.Linear(width, cfg.out_channels * cube)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the parameters."""
        return self.input_layer.weight.dtype

    def project_context(self, cond: torch.Tensor) -> list[ContextKV]:
        """Every block's cross-attention keys and values for a condition, computed once per request.

        Args:
            cond: [B, S, cond_channels] condition tokens (for CFG: the condition and the negative
                condition stacked, B = 2).

        Returns:
            ``num_blocks`` pairs (k, v), each [B, S, H, D] in the compute dtype.
        """
        cond = cond.to(self.dtype)
        return [block.project_context(cond) for block in self.blocks]

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """Raise ValueError unless x is [B, in_channels, R, R, R] and t is [B]."""
        cfg = self.cfg
        expected = (x.shape[0], cfg.in_channels, cfg.resolution, cfg.resolution, cfg.resolution)
        if tuple(x.shape) != expected:
            raise ValueError(f"x: expected shape {expected}, got {tuple(x.shape)}")
        if tuple(t.shape) != (x.shape[0],):
            raise ValueError(f"t: expected shape ({x.shape[0]},), got {tuple(t.shape)}")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        context_kv: list[ContextKV] | None = None,
    ) -> torch.Tensor:
        """Predict the velocity.

        Args:
            x: [B, in_channels, R, R, R] noisy latent x_t.
            t: [B] timesteps, already scaled to [0, 1000].
            cond: [B, S, cond_channels] condition tokens; unused when ``context_kv`` is given.
            context_kv: ``project_context(cond)``, to skip recomputing the keys and values.

        Returns:
            [B, out_channels, R, R, R] velocity, in x's dtype.
        """
        self.check_inputs(x, t)
        if context_kv is None:
            if cond is None:
                raise ValueError("cond: expected a condition tensor when context_kv is not given, got None")
            context_kv = self.project_context(cond)
        p, grid = self.cfg.patch_size, self.cfg.grid
        # 1. Tokens: one per p^3 cube, x slowest, to match pos_emb.
        h = patchify(x.to(self.dtype), p).flatten(2).transpose(1, 2)  # B L C_in*p^3
        h = self.input_layer(h) + self.pos_emb.to(self.dtype)
        t_emb = self.t_embedder(t).to(self.dtype)
        # 2. The transformer.
        for block, kv in zip(self.blocks, context_kv, strict=True):
            h = block(h, t_emb, context_kv=kv)
        # 3. Back to the grid; the final norm has no affine parameters.
        h = F.layer_norm(h.float(), h.shape[-1:]).to(self.dtype)
        h = self.out_layer(h).transpose(1, 2).reshape(x.shape[0], -1, grid, grid, grid)
        return unpatchify(h, p).to(x.dtype)
