"""TRELLIS's radiance-field decoder output -> Strivec parameters (the reference's ``to_representation``).

``SLatRadianceFieldDecoder`` predicts, per active voxel of the 64^3 grid, a rank-R sum of
tri-vector components: R x 3 axis vectors of ``dim`` samples each, R densities and R SH degree-0
colours. The reference stores them as one octree leaf per voxel, at depth log2(64), for its CUDA
octree renderer; this module only converts the parameters.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch

#: Voxels per axis of the structured latent the decoders read.
RADIANCE_FIELD_RESOLUTION = 64
#: The official aabb (origin, size): positions in [0, 1]^3 map to [-0.5, 0.5]^3.
AABB_ORIGIN, AABB_SIZE = -0.5, 1.0


@dataclass(frozen=True)
class RadianceFieldRepresentationConfig:
    """The radiance-field decoder's ``representation_config`` (defaults: TRELLIS-image-large).

    Attributes:
        rank: tri-vector components per voxel (R).
        dim: samples along each axis vector (D).
    """

    rank: int = 16
    dim: int = 8

    @classmethod
    def official(cls) -> "RadianceFieldRepresentationConfig":
        return cls()

    @property
    def layout(self) -> dict[str, slice]:
        """Channel range of each output, reference order: trivec [R, 3, D], density [R], features_dc [R, 1, 3]."""
        sizes = {"trivec": self.rank * 3 * self.dim, "density": self.rank, "features_dc": self.rank * 3}
        ranges, start = {}, 0
        for name, size in sizes.items():
            ranges[name] = slice(start, start + size)
            start += size
        return ranges

    @property
    def channels(self) -> int:
        return self.rank * (3 * self.dim + 4)

    @classmethod
    def from_reference_dict(cls, config: dict[str, Any]) -> "RadianceFieldRepresentationConfig":
        unknown = sorted(set(config) - {"rank", "dim"})
        if unknown:
            raise ValueError(f"representation_config: unknown keys {unknown}; expected some of ['dim', 'rank']")
        return cls(**config)

    def to_reference_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "dim": self.dim}


@dataclass(frozen=True)
class TrellisRadianceField:
    """Strivec leaves of one object, one per active voxel (the reference's ``Strivec`` data).

    Attributes:
        position: [N, 3] float32 voxel centres in the unit cube [0, 1]^3 (the reference's
            ``position``/``get_xyz``); world = position * AABB_SIZE + AABB_ORIGIN, see ``world_position``.
        depth: [N, 1] uint8 octree depth of every leaf, log2(resolution).
        trivec: [N, R, 3, D] float32 axis vectors (x, y, z) of each component, the +1 offset applied.
        density: [N, R] float32 component densities (Strivec's density activation is the identity).
        features_dc: [N, R, 1, 3] float32 SH degree-0 colour of each component.
        resolution: voxels per axis.
        density_shift: added to densities when rendering (0 for the decoder's output).
    """

    position: torch.Tensor
    depth: torch.Tensor
    trivec: torch.Tensor
    density: torch.Tensor
    features_dc: torch.Tensor
    resolution: int
    density_shift: float = 0.0

    @property
    def world_position(self) -> torch.Tensor:
        """[N, 3] voxel centres in TRELLIS's voxel frame, [-0.5, 0.5]^3."""
        return self.position * AABB_SIZE + AABB_ORIGIN


def to_radiance_field(
    coords: torch.Tensor,
    feats: torch.Tensor,
    config: RadianceFieldRepresentationConfig,
    resolution: int = RADIANCE_FIELD_RESOLUTION,
) -> TrellisRadianceField:
    """Strivec parameters from the radiance-field decoder's output (one object), in float32.

    Args:
        coords: [N, 3] integer voxel coordinates in [0, resolution)^3.
        feats: [N, config.channels] float raw decoder output.
        config: the representation config the decoder was built with.
        resolution: voxels per axis, a power of two (octree depth).

    Returns:
        The leaves, in the input's voxel order.
    """
    if coords.dim() != 2 or coords.shape[1] != 3 or coords.is_floating_point():
        raise ValueError(f"coords: expected an integer [N, 3] tensor, got {coords.dtype} {tuple(coords.shape)}")
    expected = (coords.shape[0], config.channels)
    if feats.dim() != 2 or tuple(feats.shape) != expected or not feats.is_floating_point():
        raise ValueError(f"feats: expected a float {list(expected)} tensor, got {feats.dtype} {tuple(feats.shape)}")
    if resolution < 1 or resolution & (resolution - 1):
        raise ValueError(f"resolution: expected a power of two, got {resolution}")
    feats, count, parts = feats.float(), coords.shape[0], config.layout
    depth = torch.full((count, 1), int(math.log2(resolution)), dtype=torch.uint8, device=feats.device)
    return TrellisRadianceField(
        position=(coords.float() + 0.5) / resolution,
        depth=depth,
        # The decoder predicts deviations from all-ones vectors, so a zero output is a constant field.
        trivec=feats[:, parts["trivec"]].reshape(count, config.rank, 3, config.dim) + 1,
        density=feats[:, parts["density"]].reshape(count, config.rank),
        features_dc=feats[:, parts["features_dc"]].reshape(count, config.rank, 1, 3),
        resolution=resolution,
    )
