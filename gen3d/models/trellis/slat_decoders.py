"""TRELLIS's structured-latent decoders: Gaussians, radiance field and mesh from sparse latents.

All three share a trunk (``SparseTransformerTrunk``): ``input_layer`` lifts the latents, absolute
position embeddings of the 64^3 voxels are added, and ``blocks`` are swin transformer blocks whose
windows shift by half a window on odd blocks. The Gaussian and radiance-field decoders end in a
plain layer norm and ``out_layer`` (per-voxel parameters at 64^3); the mesh decoder instead
subdivides twice (``upsample``, 64^3 -> 256^3) and ends in ``out_layer`` (FlexiCubes features).

Each decoder returns its raw network output as a ``SparseTensor``; turning those features into
Gaussians, a radiance field or a mesh is a separate step (``gaussians.py``, ``radiance_field.py``,
``mesh_extract.py``).
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .gaussians import hammersley_offset_perturbation
from .layers import position_embedding
from .release_args import head_count, merged_args
from .sparse.conv import SparseConv3d, SparseLinear
from .sparse.norm import SparseGroupNorm32
from .sparse.spatial import SparseSubdivide, conv_subdivided
from .sparse.tensor import SparseTensor
from .sparse_transformer import SparseTransformerBlock

#: Parameters per Gaussian in the decoder's output: xyz offset 3, colour 3, scale 3, rotation 4, opacity 1.
GAUSSIAN_PARAMETERS = 3 + 3 + 3 + 4 + 1
#: FlexiCubes features per voxel: 8 corner SDFs, 8 x 3 deformations, 21 weights (+ 8 x 6 colours).
MESH_FEATURES = 8 + 8 * 3 + 21
MESH_COLOUR_FEATURES = 8 * 6

_OFFICIAL_REPRESENTATIONS: dict[str, dict[str, Any]] = {
    "gaussian": {
        "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
        "perturb_offset": True,
        "voxel_size": 1.5,
        "num_gaussians": 32,
        "2d_filter_kernel_size": 0.1,
        "3d_filter_kernel_size": 9e-4,
        "scaling_bias": 4e-3,
        "opacity_bias": 0.1,
        "scaling_activation": "softplus",
    },
    "radiance_field": {"rank": 16, "dim": 8},
    "mesh": {"use_color": True},
}


@dataclass
class SLatDecoderConfig:
    """Hyperparameters of one decoder, named as in the checkpoint JSON's ``args``.

    Attributes:
        resolution: latent grid size (64).
        model_channels: trunk width C.
        latent_channels: latent width.
        num_blocks: swin transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over C.
        attn_mode: only "swin" (shifted windows) is implemented.
        window_size: swin window width in voxels.
        pe_mode: only "ape" is implemented.
        qk_rms_norm: RMS norm of queries and keys.
        use_fp16: the release ran the trunk in half precision (informational here).
        representation_config: the output's layout and activations, passed through to the conversion
            step; the network reads ``num_gaussians``, ``voxel_size`` / ``rank``, ``dim`` /
            ``use_color`` for its output width.
    """

    resolution: int = 64
    model_channels: int = 768
    latent_channels: int = 8
    num_blocks: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    attn_mode: str = "swin"
    window_size: int = 8
    pe_mode: str = "ape"
    qk_rms_norm: bool = False
    use_fp16: bool = True
    representation_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, supported in (("attn_mode", "swin"), ("pe_mode", "ape")):
            if getattr(self, name) != supported:
                raise ValueError(f"{name}: expected {supported!r}, got {getattr(self, name)!r}")

    @classmethod
    def official(cls, representation: str) -> "SLatDecoderConfig":
        """``slat_dec_{gs,rf,mesh}_swin8_B_64l8*_fp16`` of TRELLIS-image-large.

        Args:
            representation: "gaussian", "radiance_field" or "mesh".
        """
        if representation not in _OFFICIAL_REPRESENTATIONS:
            raise ValueError(
                f"representation: expected one of {sorted(_OFFICIAL_REPRESENTATIONS)}, got {representation!r}"
            )
        return cls(representation_config=dict(_OFFICIAL_REPRESENTATIONS[representation]))

    @classmethod
    def tiny(cls, representation: str) -> "SLatDecoderConfig":
        """The same layers at toy sizes for CPU tests (the mesh decoder's group norms need C >= 256)."""
        width = 256 if representation == "mesh" else 64
        official = cls.official(representation)
        return cls(
            model_channels=width,
            num_blocks=2,
            num_heads=4,
            window_size=4,
            representation_config=official.representation_config,
        )

    @classmethod
    def from_reference_dict(cls, args: dict[str, Any]) -> "SLatDecoderConfig":
        """From a checkpoint JSON's ``args``."""
        defaults = {f.name: getattr(cls, f.name, None) for f in fields(cls)} | {"num_head_channels": 64}
        merged = merged_args(args, (), defaults)
        merged["num_heads"] = head_count(merged, cls.model_channels)
        del merged["num_head_channels"]
        return cls(**{key: value for key, value in merged.items() if key in args or key == "num_heads"})

    def to_reference_dict(self) -> dict[str, Any]:
        """The checkpoint JSON's ``args``."""
        return asdict(self)


class SparseTransformerTrunk(nn.Module):
    """The decoders' shared trunk (TRELLIS's ``SparseTransformerBase``): keys ``input_layer``, ``blocks``."""

    def __init__(self, cfg: SLatDecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.input_layer = SparseLinear(cfg.latent_channels, cfg.model_channels)
        self.blocks = nn.ModuleList(
            SparseTransformerBlock(
                cfg.model_channels,
                cfg.num_heads,
                cfg.mlp_ratio,
                attn_mode="windowed",
                window_size=cfg.window_size,
                shift_window=cfg.window_size // 2 * (index % 2),
                qk_rms_norm=cfg.qk_rms_norm,
            )
            for index in range(cfg.num_blocks)
        )

    @property
    def torso_dtype(self) -> torch.dtype:
        """The blocks' dtype (the release keeps ``input_layer`` and ``out_layer`` in fp32)."""
        return self.blocks[0].attn.to_qkv.weight.dtype

    def trunk(self, x: SparseTensor) -> SparseTensor:
        """Latents [N, latent_channels] -> [N, C] trunk features in the torso's dtype."""
        if x.feats.dim() != 2 or x.feats.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"x.feats: expected [N, {self.cfg.latent_channels}], got {tuple(x.feats.shape)}")
        h = self.input_layer(x.to(self.input_layer.weight.dtype))
        h = h + position_embedding(x.coords[:, 1:], self.cfg.model_channels).to(h.dtype)
        h = h.to(self.torso_dtype)
        for block in self.blocks:
            h = block(h)
        return h

    def _normed_output(self, h: SparseTensor, dtype: torch.dtype) -> SparseTensor:
        """Plain layer norm (float32, no affine) then ``out_layer``, returned in ``dtype``."""
        feats = F.layer_norm(h.feats.float(), h.feats.shape[-1:])
        return self.out_layer(h.replace(feats.to(self.out_layer.weight.dtype))).to(dtype)


class SLatGaussianDecoder(SparseTransformerTrunk):
    """Latents -> 32 Gaussians' raw parameters per voxel (``out_layer``: C -> 32 x 14).

    The persistent buffer ``offset_perturbation`` [num_gaussians, 3] (in the checkpoint) spreads the
    Gaussians' initial offsets over the voxel (see ``gaussians.hammersley_offset_perturbation``).
    """

    def __init__(self, cfg: SLatDecoderConfig):
        super().__init__(cfg)
        count, voxel_size = cfg.representation_config["num_gaussians"], cfg.representation_config["voxel_size"]
        self.out_layer = SparseLinear(cfg.model_channels, count * GAUSSIAN_PARAMETERS)
        self.register_buffer("offset_perturbation", hammersley_offset_perturbation(count, voxel_size))

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, latent_channels] latents -> [N, num_gaussians * 14] raw parameters, in x's dtype."""
        return self._normed_output(self.trunk(x), x.dtype)


class SLatRadianceFieldDecoder(SparseTransformerTrunk):
    """Latents -> per-voxel Strivec parameters (``out_layer``: C -> rank x (3 dim + 1 + 3))."""

    def __init__(self, cfg: SLatDecoderConfig):
        super().__init__(cfg)
        rank, dim = cfg.representation_config["rank"], cfg.representation_config["dim"]
        self.out_layer = SparseLinear(cfg.model_channels, rank * 3 * dim + rank + rank * 3)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, latent_channels] latents -> [N, rank * (3 dim + 4)] raw parameters, in x's dtype."""
        return self._normed_output(self.trunk(x), x.dtype)


class _SparseSiLU(nn.SiLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(F.silu(x.feats))


class SparseSubdivideBlock3d(nn.Module):
    """Norm + SiLU, subdivide 2x, then conv / norm / SiLU / conv, plus a subdivided skip.

    Keys: ``act_layers.0`` (group norm), ``out_layers.0`` and ``out_layers.3`` (3^3 convs),
    ``out_layers.1`` (group norm), ``skip_connection`` (1^3 conv when the width changes).

    Args:
        channels: input width.
        out_channels: output width.
        num_groups: group-norm groups.
    """

    def __init__(self, channels: int, out_channels: int, num_groups: int = 32):
        super().__init__()
        self.act_layers = nn.Sequential(SparseGroupNorm32(num_groups, channels), _SparseSiLU())
        self.sub = SparseSubdivide()
        self.out_layers = nn.Sequential(
            SparseConv3d(channels, out_channels, 3),
            SparseGroupNorm32(num_groups, out_channels),
            _SparseSiLU(),
            SparseConv3d(out_channels, out_channels, 3),
        )
        self.skip_connection = SparseConv3d(channels, out_channels, 1) if out_channels != channels else nn.Identity()

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, C_in] at resolution R -> [8N, C_out] at 2R (voxel i's children are rows 8i .. 8i+7)."""
        first, norm, act, last = self.out_layers
        # The first conv reads copied parent features: run it on the parents (conv_subdivided).
        h = last(act(norm(conv_subdivided(first, self.act_layers(x)))))
        # A 1^3 conv commutes with copying features to children: run it on the N parents, not 8N.
        return h + self.sub(self.skip_connection(x))


class SLatMeshDecoder(SparseTransformerTrunk):
    """Latents -> FlexiCubes features at 4x the latent resolution (``upsample``, ``out_layer``)."""

    def __init__(self, cfg: SLatDecoderConfig):
        super().__init__(cfg)
        width = cfg.model_channels
        self.upsample = nn.ModuleList(
            [SparseSubdivideBlock3d(width, width // 4), SparseSubdivideBlock3d(width // 4, width // 8)]
        )
        colour = MESH_COLOUR_FEATURES if cfg.representation_config.get("use_color", False) else 0
        self.out_layer = SparseLinear(width // 8, MESH_FEATURES + colour)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, latent_channels] latents at R^3 -> [64N, 101] features (with colour) at (4R)^3, in x's dtype."""
        h = self.trunk(x)
        for block in self.upsample:
            h = block(h)
        return self.out_layer(h.to(self.out_layer.weight.dtype)).to(x.dtype)
