"""Planted surfaces and colour fields with known answers, for mesh tests and benchmarks.

``planted_mesh`` is the marching-cubes surface of an analytic field sampled on TripoSR's grid
(box ±0.87, ``resolution`` points per axis), so it has the same terracing, vertex density and
face count as a real ``extract_mesh`` (about 200k faces for the blob at resolution 256). Two
fields: ``blob_field``, a bumpy sphere, and ``mug_field``, a cup with a hollow inside and a
handle that also pokes into the cup (concave, genus 3: many charts). The colour fields take
model-frame points like ``TripoSR.query(...)["color"]`` does, so baking is testable without
weights.
"""

from collections.abc import Callable

import numpy as np
import torch

from gen3d.mesh.bake import ColorFn
from gen3d.mesh.isosurface import marching_cubes
from gen3d.results import MeshAsset

#: TripoSR's box half-side (``renderer.radius`` of the official config).
BOX_RADIUS = 0.87
#: Mean radius and bump amplitude of the blob, world units.
BLOB_RADIUS = 0.5
BUMP_AMPLITUDE = 0.06


def blob_field(points: torch.Tensor) -> torch.Tensor:
    """Signed field (N,) of the bumpy blob, positive inside, at model-frame points (N, 3)."""
    x, y, z = points.unbind(-1)
    bumps = torch.sin(7.0 * x) * torch.sin(6.0 * y + 1.0) * torch.sin(5.0 * z + 2.0)
    return BLOB_RADIUS + BUMP_AMPLITUDE * bumps - points.norm(dim=-1)


def mug_field(points: torch.Tensor) -> torch.Tensor:
    """Signed field (N,) of a mug (open cup with a floor and a handle), positive inside, z up."""
    x, y, z = points.unbind(-1)
    radial = torch.sqrt(x * x + y * y)
    outer = torch.minimum(0.4 - radial, 0.4 - (z + 0.05).abs())  # solid cylinder r 0.4, z in [-0.45, 0.35]
    hollow = torch.minimum(0.33 - radial, 0.5 - (z - 0.33).abs())  # inner cavity from z = -0.17 up
    cup = torch.minimum(outer, -hollow)
    # Handle: a torus in the x-z plane beside the cup, minor radius 0.06.
    ring = torch.sqrt((torch.sqrt((x - 0.45) ** 2 + (z + 0.05) ** 2) - 0.2) ** 2 + y * y)
    return torch.maximum(cup, 0.06 - ring)


def grid_points(resolution: int, radius: float = BOX_RADIUS, device: torch.device | str = "cpu") -> torch.Tensor:
    """TripoSR's marching grid as points (R, R, R, 3), indexed [x, y, z], spanning ±radius."""
    axis = torch.linspace(-radius, radius, resolution, device=device)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def planted_mesh(field: Callable[[torch.Tensor], torch.Tensor], resolution: int = 256,
                 color_fn: ColorFn | None = None, device: torch.device | str = "cpu") -> MeshAsset:  # fmt: skip
    """Marching-cubes mesh of ``field``'s zero level on a ``resolution``^3 grid, model frame.

    Args:
        field: signed field (N,) of points (N, 3), positive inside.
        resolution: grid points per axis (R); 256 gives about 200k faces for the blob, like
            TripoSR's default.
        color_fn: vertex colours from this field; grey when None.
        device: where the field is sampled and marched.

    Returns:
        The mesh with (V, 3) uint8 vertex colours, faces counter-clockwise from outside.
    """
    values = field(grid_points(resolution, device=device).reshape(-1, 3)).reshape(resolution, resolution, resolution)
    surface = marching_cubes(values, 0.0)
    vertices = surface.vertices * (2.0 * BOX_RADIUS / (resolution - 1)) - BOX_RADIUS
    if color_fn is None:
        colors = torch.full_like(vertices, 0.5)
    else:
        colors = color_fn(vertices)
    return MeshAsset(
        vertices=vertices.cpu().numpy().astype(np.float32),
        faces=surface.faces.cpu().numpy().astype(np.int64),
        vertex_colors=(colors * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy(),
    )


def _blend(low: tuple[float, float, float], high: tuple[float, float, float], t: torch.Tensor) -> torch.Tensor:
    """Colours (N, 3) between ``low`` (t = 0) and ``high`` (t = 1)."""
    a = torch.tensor(low, dtype=t.dtype, device=t.device)
    b = torch.tensor(high, dtype=t.dtype, device=t.device)
    return a + t[:, None] * (b - a)


def checker(points: torch.Tensor, period: float = 0.25, sharpness: float = 6.0) -> torch.Tensor:
    """3D checkerboard (N, 3) in [0, 1] with cells of ``period / 2``; edges softened by ``sharpness``.

    Soft edges keep the field band-limited like TripoSR's colour MLP, so a fixed render size can
    resolve it; larger ``sharpness`` is harder.
    """
    waves = torch.sin(points * (2.0 * torch.pi / period)).prod(dim=-1)
    return _blend((0.9, 0.2, 0.1), (0.1, 0.3, 0.9), torch.sigmoid(sharpness * waves / 0.3))


def stripes(points: torch.Tensor, period: float = 0.2) -> torch.Tensor:
    """Diagonal sinusoidal stripes (N, 3) in [0, 1] across x + z."""
    t = 0.5 + 0.5 * torch.sin((points[:, 0] + points[:, 2]) * (2.0 * torch.pi / period))
    return _blend((0.95, 0.85, 0.2), (0.2, 0.1, 0.4), t)


def gradient(points: torch.Tensor) -> torch.Tensor:
    """Linear colour ramp (N, 3) in [0, 1]: R along x, G along y, B along z over the box."""
    return ((points / (2.0 * BOX_RADIUS)) + 0.5).clamp(0.0, 1.0)


def bumpy_blob(resolution: int = 256, color_fn: ColorFn | None = None) -> MeshAsset:
    """``planted_mesh`` of ``blob_field``: about 200k faces at resolution 256."""
    return planted_mesh(blob_field, resolution, color_fn)


#: Planted colour fields by name.
COLOR_FIELDS: dict[str, ColorFn] = {"checker": checker, "stripes": stripes, "gradient": gradient}
