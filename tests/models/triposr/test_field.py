"""Triplane queries against a direct computation of the spec's formulas."""

import math

import torch

from gen3d.models.triposr import TripoSR


def _bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Manual bilinear sample of (C, H, W) at u (width) and v (height) in [-1, 1], align_corners False, zero pad."""
    channels, height, width = plane.shape
    x, y = ((u + 1) * width - 1) / 2, ((v + 1) * height - 1) / 2
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(channels, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < width and 0 <= yi < height:
                out += weight * plane[:, yi, xi].double()
    return out


def _mlp(model: TripoSR, features: torch.Tensor) -> torch.Tensor:
    hidden = features
    linears = [m for m in model.decoder.layers if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        hidden = hidden @ layer.weight.double().T + layer.bias.double()
        if i < len(linears) - 1:
            hidden = hidden * torch.sigmoid(hidden)
    return hidden


def test_query_matches_manual_formulas(tiny_model: TripoSR) -> None:
    torch.manual_seed(3)
    code = torch.randn(3, tiny_model.cfg.post_processor.out_channels, 16, 16)
    points = torch.tensor([[0.1, -0.3, 0.5], [-0.8, 0.7, 0.02], [0.86, 0.0, -0.86], [1.2, 0.1, 0.1]])
    got = tiny_model.query(code, points, chunk=3)
    for n, (x, y, z) in enumerate(points.tolist()):
        ux, uy, uz = x / 0.87, y / 0.87, z / 0.87
        features = torch.cat([_bilinear(code[0], ux, uy), _bilinear(code[1], ux, uz), _bilinear(code[2], uy, uz)])
        raw = _mlp(tiny_model, features)
        assert math.isclose(got["density_act"][n].item(), math.exp(raw[0].item() - 1.0), rel_tol=1e-4)
        torch.testing.assert_close(got["color"][n].double(), torch.sigmoid(raw[1:4]), rtol=1e-4, atol=1e-6)


def test_density_grid_equals_point_queries_on_the_grid(tiny_model: TripoSR) -> None:
    torch.manual_seed(4)
    code = torch.randn(1, 3, tiny_model.cfg.post_processor.out_channels, 16, 16)
    resolution = 9
    grid = tiny_model.density_grid(code, resolution, chunk=100)  # 100 points -> one x slab per batch
    axis = torch.linspace(0, 1, resolution) * 1.74 - 0.87
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    queried = tiny_model.query(code, points)["density_act"].reshape(resolution, resolution, resolution)
    torch.testing.assert_close(grid, queried, rtol=1e-4, atol=1e-6)
