"""TRELLIS's Gaussian decoder output -> 3D Gaussians (the reference's ``to_representation``, activated).

``SLatGaussianDecoder`` predicts, for each active voxel of the 64^3 grid, ``num_gaussians``
Gaussians as raw channels laid out per ``GaussianRepresentationConfig.layout``: position offsets,
SH degree-0 colour, scale, rotation and opacity. This module applies the reference's learning-rate
multipliers, offset perturbation, biases and activations (its ``Gaussian.get_*`` properties) and
returns plain activated tensors.

Frame: TRELLIS's voxel frame (axis i along voxel coordinate i, z up), the aabb [-0.5, 0.5]^3.
A Gaussian lies within ``voxel_size / 2`` voxels of its voxel's centre, so it may poke out of the
aabb by up to a quarter voxel. The reference's ``save_ply`` maps (x, y, z) to (x, -z, y).
"""

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F

#: Voxels per axis of the structured latent the decoders read.
GAUSSIAN_RESOLUTION = 64
#: Degree-0 spherical-harmonic constant: rgb = 0.5 + SH_C0 * features_dc.
SH_C0 = 0.28209479177387814
#: The official aabb (origin, size): positions in [0, 1]^3 map to [-0.5, 0.5]^3.
AABB_ORIGIN, AABB_SIZE = -0.5, 1.0
#: Raw parameters per Gaussian, in channel order.
_PARAMETERS = {"_xyz": 3, "_features_dc": 3, "_scaling": 3, "_rotation": 4, "_opacity": 1}
_REFERENCE_KEYS = {
    "lr", "perturb_offset", "voxel_size", "num_gaussians", "2d_filter_kernel_size", "3d_filter_kernel_size",
    "scaling_bias", "opacity_bias", "scaling_activation",
}  # fmt: skip


def _official_lr() -> dict[str, float]:
    return {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1}


@dataclass(frozen=True)
class GaussianRepresentationConfig:
    """The Gaussian decoder's ``representation_config`` (defaults: TRELLIS-image-large).

    Attributes:
        num_gaussians: Gaussians per voxel (G).
        voxel_size: how far offsets reach, in voxels (tanh-bounded to +- voxel_size / 2).
        perturb_offset: add the decoder's fixed ``offset_perturbation`` before the tanh.
        scaling_bias: activated scale of a zero raw scale (world units).
        opacity_bias: activated opacity of a zero raw opacity.
        min_kernel_size: the 3D filter: scales are sqrt(s^2 + min_kernel_size^2).
        filter_2d_kernel_size: the renderer's 2D filter (unused here; kept for the config).
        scaling_activation: "softplus" or "exp".
        lr: per-parameter multipliers of the raw channels, keyed by the reference's names.
    """

    num_gaussians: int = 32
    voxel_size: float = 1.5
    perturb_offset: bool = True
    scaling_bias: float = 0.004
    opacity_bias: float = 0.1
    min_kernel_size: float = 0.0009
    filter_2d_kernel_size: float = 0.1
    scaling_activation: Literal["softplus", "exp"] = "softplus"
    lr: dict[str, float] = field(default_factory=_official_lr)

    def __post_init__(self) -> None:
        if self.scaling_activation not in ("softplus", "exp"):
            raise ValueError(f"scaling_activation: expected 'softplus' or 'exp', got {self.scaling_activation!r}")
        if sorted(self.lr) != sorted(_PARAMETERS):
            raise ValueError(f"lr: expected keys {sorted(_PARAMETERS)}, got {sorted(self.lr)}")

    @classmethod
    def official(cls) -> "GaussianRepresentationConfig":
        return cls()

    @property
    def channels(self) -> int:
        """Output channels of the decoder: 14 per Gaussian."""
        return self.num_gaussians * sum(_PARAMETERS.values())

    @property
    def layout(self) -> dict[str, slice]:
        """Channel range of each raw parameter (G consecutive groups of its width), reference order."""
        ranges, start = {}, 0
        for name, width in _PARAMETERS.items():
            ranges[name] = slice(start, start + self.num_gaussians * width)
            start += self.num_gaussians * width
        return ranges

    @classmethod
    def from_reference_dict(cls, config: dict[str, Any]) -> "GaussianRepresentationConfig":
        unknown = sorted(set(config) - _REFERENCE_KEYS)
        if unknown:
            known = sorted(_REFERENCE_KEYS)
            raise ValueError(f"representation_config: unknown keys {unknown}; expected some of {known}")
        renamed = {"3d_filter_kernel_size": "min_kernel_size", "2d_filter_kernel_size": "filter_2d_kernel_size"}
        values = {renamed.get(key, key): value for key, value in config.items()}
        if "lr" in values:
            values["lr"] = dict(values["lr"])
        return cls(**values)

    def to_reference_dict(self) -> dict[str, Any]:
        renamed = {"min_kernel_size": "3d_filter_kernel_size", "filter_2d_kernel_size": "2d_filter_kernel_size"}
        return {renamed.get(f.name, f.name): getattr(self, f.name) for f in fields(self)} | {"lr": dict(self.lr)}


@dataclass(frozen=True)
class TrellisGaussians:
    """Activated 3D Gaussians of one object, M = voxels x G, voxel-major (voxel i owns rows iG..iG+G-1).

    Attributes:
        xyz: [M, 3] float32 centres in world units (the aabb [-0.5, 0.5]^3); the reference's get_xyz.
        features_dc: [M, 3] float32 SH degree-0 coefficients (get_features without its singleton axis);
            rgb = 0.5 + SH_C0 * features_dc, see ``rgb``.
        opacity: [M] float32 in (0, 1) (get_opacity without its trailing axis).
        opacity_logit: [M] float32 the opacity before its sigmoid (exact where the sigmoid saturates).
        scale: [M, 3] float32 standard deviations along the local axes, world units, at least
            min_kernel_size (get_scaling, the 3D filter included).
        rotation: [M, 4] float32 unit quaternions (w, x, y, z), local -> world (get_rotation).
    """

    xyz: torch.Tensor
    features_dc: torch.Tensor
    opacity: torch.Tensor
    opacity_logit: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor

    def __len__(self) -> int:
        return self.xyz.shape[0]

    @property
    def rgb(self) -> torch.Tensor:
        """[M, 3] base colour (unclamped)."""
        return 0.5 + SH_C0 * self.features_dc

    def splat_fields(self) -> dict[str, torch.Tensor]:
        """The splat PLY parameterisation, keyed as ``gen3d.results.Gaussians``'s fields, same frame.

        ``Gaussians(**{k: v.cpu().numpy() for k, v in g.splat_fields().items()})`` then holds centres,
        f_dc, opacity logits, natural-log scales and unit (w, x, y, z) quaternions.
        """
        return {
            "means": self.xyz,
            "f_dc": self.features_dc,
            "opacity": self.opacity_logit,
            "log_scales": torch.log(self.scale),
            "rotations": self.rotation,
        }


def hammersley_offset_perturbation(num_gaussians: int, voxel_size: float) -> torch.Tensor:
    """The Gaussian decoder's ``offset_perturbation`` buffer: [G, 3] float32 pre-tanh offsets.

    It spreads a voxel's Gaussians over the voxel before any learning: point n of the 3-D Hammersley
    set (n / G, base-2 and base-3 radical inverses of n) mapped to [-1, 1) / voxel_size, then atanh,
    so that the later tanh returns it. The checkpoint stores it; this rebuilds it for random init.
    """

    def radical_inverse(base: int, n: int) -> float:
        value, scale = 0.0, 1.0 / base
        while n:
            n, digit = divmod(n, base)
            value += digit * scale
            scale /= base
        return value

    points = [[n / num_gaussians, radical_inverse(2, n), radical_inverse(3, n)] for n in range(num_gaussians)]
    return torch.atanh((torch.tensor(points, dtype=torch.float64).float() * 2 - 1) / voxel_size)


def to_gaussians(
    coords: torch.Tensor,
    feats: torch.Tensor,
    config: GaussianRepresentationConfig,
    offset_perturbation: torch.Tensor | None = None,
    resolution: int = GAUSSIAN_RESOLUTION,
) -> TrellisGaussians:
    """Activated Gaussians from the Gaussian decoder's output (one object), computed in float32.

    Args:
        coords: [N, 3] integer voxel coordinates in [0, resolution)^3.
        feats: [N, config.channels] float raw decoder output.
        config: the representation config the decoder was built with.
        offset_perturbation: [G, 3] float the decoder's ``offset_perturbation`` buffer; required
            when ``config.perturb_offset``.
        resolution: voxels per axis.

    Returns:
        N x G Gaussians, voxel-major.
    """
    _check_inputs(coords, feats, config, offset_perturbation)
    feats, count, g = feats.float(), coords.shape[0], config.num_gaussians
    raw = {name: feats[:, part] * config.lr[name] for name, part in config.layout.items()}

    offset = raw["_xyz"].reshape(count, g, 3)
    if config.perturb_offset:
        offset = offset + offset_perturbation.to(offset)
    offset = torch.tanh(offset) / resolution * 0.5 * config.voxel_size
    centres = (coords.float() + 0.5) / resolution
    unit_xyz = (centres[:, None] + offset).flatten(0, 1)  # [M, 3] in [0, 1]^3, the reference's _xyz

    opacity_logit = raw["_opacity"].reshape(-1) + _logit(config.opacity_bias, feats)
    activate = F.softplus if config.scaling_activation == "softplus" else torch.exp
    scale = activate(raw["_scaling"].reshape(-1, 3) + _inverse_scaling(config, feats))
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=feats.device)  # a zero raw rotation means none
    return TrellisGaussians(
        xyz=unit_xyz * AABB_SIZE + AABB_ORIGIN,
        features_dc=raw["_features_dc"].reshape(-1, 3),
        opacity=torch.sigmoid(opacity_logit),
        opacity_logit=opacity_logit,
        scale=torch.sqrt(torch.square(scale) + config.min_kernel_size**2),
        rotation=F.normalize(raw["_rotation"].reshape(-1, 4) + identity, dim=-1),
    )


def _logit(probability: float, like: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) evaluated in float32, as the reference evaluates its opacity bias."""
    p = torch.tensor(probability, dtype=torch.float32, device=like.device)
    return torch.log(p / (1 - p))


def _inverse_scaling(config: GaussianRepresentationConfig, like: torch.Tensor) -> torch.Tensor:
    """The raw value that the scale activation maps to ``scaling_bias``, in float32."""
    bias = torch.tensor(config.scaling_bias, dtype=torch.float32, device=like.device)
    if config.scaling_activation == "exp":
        return torch.log(bias)
    return bias + torch.log(-torch.expm1(-bias))  # softplus^-1


def _check_inputs(
    coords: torch.Tensor, feats: torch.Tensor, config: GaussianRepresentationConfig, perturbation: torch.Tensor | None
) -> None:
    if coords.dim() != 2 or coords.shape[1] != 3 or coords.is_floating_point():
        raise ValueError(f"coords: expected an integer [N, 3] tensor, got {coords.dtype} {tuple(coords.shape)}")
    expected = (coords.shape[0], config.channels)
    if feats.dim() != 2 or tuple(feats.shape) != expected or not feats.is_floating_point():
        raise ValueError(f"feats: expected a float {list(expected)} tensor, got {feats.dtype} {tuple(feats.shape)}")
    if config.perturb_offset and (perturbation is None or tuple(perturbation.shape) != (config.num_gaussians, 3)):
        got = None if perturbation is None else tuple(perturbation.shape)
        expected = f"[{config.num_gaussians}, 3]"
        raise ValueError(f"offset_perturbation: expected {expected} (perturb_offset is on), got {got}")

