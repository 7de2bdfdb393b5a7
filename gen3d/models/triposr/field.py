"""The triplane radiance field: density and colour at world points, and density on a grid.

Plane 0 holds (x, y), plane 1 (x, z), plane 2 (y, z); the first coordinate indexes width.
On a regular grid the decoder's first Linear is a sum of per-plane terms, so ``density_grid``
samples and projects each plane on an R x R grid once and broadcasts, instead of sampling R^3
points three times: the same numbers up to summation order, at a fraction of the cost.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gen3d.models.triposr.decoder import NeRFMLP

#: Plane p samples these two world axes (x=0, y=1, z=2), first one along the plane's width.
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


@dataclass
class FieldConfig:
    """The reference ``renderer`` section: how features become density and colour.

    Args:
        radius: half side of the world box; points are divided by it before sampling.
        feature_reduction: only ``concat`` (plane-major) is implemented.
        density_activation: only ``exp`` is implemented.
        density_bias: added to the raw density before the activation.
        num_samples_per_ray: samples per ray for volume rendering (previews).
    """

    radius: float = 0.87
    feature_reduction: str = "concat"
    density_activation: str = "exp"
    density_bias: float = -1.0
    num_samples_per_ray: int = 128

    def __post_init__(self) -> None:
        if self.feature_reduction != "concat":
            raise ValueError(f"renderer.feature_reduction: expected 'concat', got {self.feature_reduction!r}")
        if self.density_activation != "exp":
            raise ValueError(f"renderer.density_activation: expected 'exp', got {self.density_activation!r}")


def map_chunks(fn: Callable[[int, int], torch.Tensor], total: int, chunk: int) -> torch.Tensor:
    """Concatenate ``fn(start, stop)`` over [0, total) in steps of ``chunk`` (dim 0); bounds peak memory."""
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    return torch.cat([fn(start, min(start + chunk, total)) for start in range(0, total, chunk)], dim=0)


def _single_code(scene_code: torch.Tensor) -> torch.Tensor:
    if scene_code.dim() == 5 and scene_code.shape[0] == 1:
        scene_code = scene_code[0]
    if scene_code.dim() != 4 or scene_code.shape[0] != 3:
        raise ValueError(f"scene_code: expected (3, C, H, W) or (1, 3, C, H, W), got {tuple(scene_code.shape)}")
    return scene_code


def sample_features(scene_code: torch.Tensor, points: torch.Tensor, radius: float) -> torch.Tensor:
    """Bilinear triplane features at world points.

    Args:
        scene_code: (3, C, H, W).
        points: (N, 3) world coordinates.
        radius: world half side.

    Returns:
        (N, 3 * C) float32 features, plane-major; zero outside the box (zero padding).
    """
    # Sampling runs in float32 whatever the model dtype: it is cheap next to the MLP, and
    # half-precision grid_sample returns garbage on CPU (torch 2.13).
    scene_code = scene_code.float()
    uv = points.float() / radius
    grids = torch.stack([uv[:, list(axes)] for axes in PLANE_AXES]).unsqueeze(1)  # (3, 1, N, 2)
    sampled = F.grid_sample(scene_code, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[:, :, 0].permute(2, 0, 1).flatten(1)  # (3, C, 1, N) -> (N, 3C)


def activate(raw: torch.Tensor, cfg: FieldConfig) -> dict[str, torch.Tensor]:
    """Decoder outputs (..., 4) -> ``density_act`` (...) and ``color`` (..., 3) in [0, 1], float32."""
    raw = raw.float()
    return {"density_act": torch.exp(raw[..., 0] + cfg.density_bias), "color": torch.sigmoid(raw[..., 1:4])}


def query_points(
    decoder: NeRFMLP, scene_code: torch.Tensor, points: torch.Tensor, cfg: FieldConfig, chunk: int
) -> dict[str, torch.Tensor]:
    """Density and colour at world points (N, 3); ``chunk`` points per decoder batch."""
    code = _single_code(scene_code).to(decoder.first.weight.device, torch.float32)
    dtype = decoder.first.weight.dtype

    def run(start: int, stop: int) -> torch.Tensor:
        features = sample_features(code, points[start:stop].to(code.device), cfg.radius)
        return decoder(features.to(dtype)).float()

    raw = map_chunks(run, points.shape[0], chunk)
    return activate(raw, cfg)


def grid_coordinates(resolution: int, radius: float, device: torch.device | str) -> torch.Tensor:
    """The marching grid's per-axis world coordinates (R,): linspace(0, 1, R) mapped to [-radius, radius]."""
    return (torch.linspace(0.0, 1.0, resolution, device=device) * 2.0 - 1.0) * radius


def _plane_terms(decoder: NeRFMLP, code: torch.Tensor, coords: torch.Tensor, radius: float) -> list[torch.Tensor]:
    """Per-plane contributions to the first Linear on the grid: three (R, R, n) tensors, bias in the last."""
    uv = coords / radius
    first = decoder.first
    channels = code.shape[1]
    # grid[a, b] = (axis0 coordinate a along width, axis1 coordinate b along height) -> output [c, a, b].
    grid = torch.stack(torch.meshgrid(uv, uv, indexing="ij"), dim=-1).unsqueeze(0)
    terms = []
    for plane in range(3):
        feats = F.grid_sample(code[plane : plane + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weight = first.weight[:, plane * channels : (plane + 1) * channels].float()
        bias = first.bias.float() if plane == 2 else None
        terms.append(F.linear(feats[0].permute(1, 2, 0), weight, bias).to(first.weight.dtype))
    return terms


def density_grid(
    decoder: NeRFMLP, scene_code: torch.Tensor, resolution: int, cfg: FieldConfig, chunk: int
) -> torch.Tensor:
    """``density_act`` on the marching grid, (R, R, R) float32 indexed [x, y, z] (ij).

    ``chunk`` bounds the points per decoder batch; it is rounded down to whole x slabs.
    """
    # Planes are sampled and projected in float32 (R^2 work); the R^3 MLP runs in the decoder dtype.
    code = _single_code(scene_code).to(decoder.first.weight.device, torch.float32)
    coords = grid_coordinates(resolution, cfg.radius, code.device)
    term_xy, term_xz, term_yz = _plane_terms(decoder, code, coords, cfg.radius)
    slabs = max(1, chunk // resolution**2)

    def run(start: int, stop: int) -> torch.Tensor:
        hidden = term_xy[start:stop, :, None] + term_xz[start:stop, None, :] + term_yz[None]
        return decoder.head(hidden)[..., 0].float()

    raw = map_chunks(run, resolution, slabs)
    return torch.exp(raw + cfg.density_bias)
