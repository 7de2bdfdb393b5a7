"""Planted shapes for TRELLIS with random weights (the ``tiny`` and ``random`` modes).

Random weights give a structure decoder whose occupancy is noise (about half the 64^3 grid, or
none) and a mesh decoder whose signed distances are noise, so FlexiCubes would return millions of
faces. Timing and tests need an object-like asset instead, so a planted shape replaces exactly
two decisions and nothing else: which voxels are occupied, and the sign of the distance at the
mesh decoder's corners. Every network still runs at its real size on the planted voxels (the same
FLOPs as a real object of that size), and colours, deformations, FlexiCubes weights and Gaussians
stay the networks' own. Outputs are demos, never real assets.

- ``sphere`` (``random`` mode, for speed and memory): a spherical shell of ``SHELL_RADIUS`` whose
  occupancy is ``SHELL_VOXELS`` voxels thick at 64^3 -- 20,032 occupied voxels, the order of a
  real TRELLIS object's sparse structure.
- ``silhouette`` (``tiny`` mode, demos and tests): the conditioning image's foreground extruded
  into a pillow, so two inputs give visibly different shapes.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from gen3d.models.trellis.flexicubes import CUBE_CORNERS

#: Radius of the planted sphere, in the unit cube [-0.5, 0.5]^3 TRELLIS decodes into.
SHELL_RADIUS = 0.38
#: Thickness of the occupied shell, in 64^3 voxels (a real structure is a shell around the surface).
SHELL_VOXELS = 2.7
#: Share of the pillow's half-depth at the silhouette's centre, relative to its half-width.
PILLOW_DEPTH = 0.6
#: Image luminance below which a pixel of TRELLIS's conditioning image (black backdrop) is background.
BACKDROP_LEVEL = 0.02

PlantedShape = Literal["sphere", "silhouette"]


def _voxel_centres(resolution: int, device: torch.device) -> torch.Tensor:
    """[R, R, R, 3] centres of a resolution^3 grid of the unit cube [-0.5, 0.5]^3, axis i = coord i."""
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution - 0.5
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def sphere_distance(points: torch.Tensor) -> torch.Tensor:
    """Signed distance [...] to the planted sphere of ``SHELL_RADIUS`` (negative inside)."""
    return points.norm(dim=-1) - SHELL_RADIUS


def silhouette_distance(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance [...] to the pillow extruded from ``mask`` (negative inside).

    The image plane is TRELLIS's x-z plane (z up, the camera looking along +y); the pillow's
    half-depth along y follows the mask's distance to its edge, so it bulges at the centre.

    Args:
        points: [..., 3] in the unit cube.
        mask: [H, W] float in [0, 1], row 0 at the top.
    """
    height, width = mask.shape
    # Depth profile: a blurred mask (~ distance to the edge) scaled to PILLOW_DEPTH of the half-width.
    profile = F.avg_pool2d(mask[None, None], kernel_size=9, stride=1, padding=4, count_include_pad=True)[0, 0]
    half_depth = PILLOW_DEPTH * 0.5 * profile
    # Sample the profile at each point's (x, z): grid_sample wants x -> columns, -z -> rows.
    grid = torch.stack([points[..., 0] * 2, -points[..., 2] * 2], dim=-1).reshape(1, -1, 1, 2)
    depth = F.grid_sample(half_depth[None, None], grid, align_corners=False, padding_mode="zeros")
    depth = depth.reshape(points.shape[:-1])
    inside_depth = depth > 1e-3
    distance = points[..., 1].abs() - depth
    # Outside the silhouette: a positive distance of at least one voxel keeps every sign consistent.
    return torch.where(inside_depth, distance, distance.clamp(min=1.0 / max(height, width)))


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """[H, W] float mask of a TRELLIS conditioning image [3, H, W] in [0, 1] (black backdrop)."""
    return (image.float().mean(dim=0) > BACKDROP_LEVEL).float()


def planted_structure(shape: PlantedShape, resolution: int, image: torch.Tensor | None) -> torch.Tensor:
    """The occupied voxels of the planted shape: [N, 4] int32 (batch 0, x, y, z).

    Args:
        shape: ``sphere`` or ``silhouette``.
        resolution: voxels per axis (64).
        image: [3, H, W] conditioning image in [0, 1]; required for ``silhouette``.
    """
    device = image.device if image is not None else torch.device("cpu")
    distance = planted_distance(shape, _voxel_centres(resolution, device), image)
    occupied = distance.abs() <= SHELL_VOXELS / (2 * resolution) if shape == "sphere" else distance <= 0
    coords = occupied.nonzero().int()
    return torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1)


def planted_distance(shape: PlantedShape, points: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    """Signed distance of ``points`` [..., 3] to the planted shape (negative inside)."""
    if shape == "sphere":
        return sphere_distance(points)
    if image is None:
        raise ValueError("image: the silhouette shape needs the conditioning image, got None")
    return silhouette_distance(points, foreground_mask(image))


def planted_corner_distance(shape: PlantedShape, coords: torch.Tensor, resolution: int, image: torch.Tensor | None) -> torch.Tensor:
    """[N, 8] planted signed distance at the corners of the cubes at ``coords`` [N, 3] of a
    ``resolution``^3 grid, in FlexiCubes' corner order: the mesh decoder's SDF channels."""
    corners = (coords[:, None, :] + CUBE_CORNERS.to(coords.device)[None]).float() / resolution - 0.5
    return planted_distance(shape, corners, image)
