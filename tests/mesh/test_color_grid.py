"""The colour field rebuilt from coloured surface samples (TRELLIS's bake source)."""

import math

import pytest
import torch

from gen3d.mesh.color_grid import ColorGrid


def _sphere_samples(count: int, radius: float = 0.4) -> torch.Tensor:
    """Fibonacci points on a sphere: even coverage, deterministic."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    polar = torch.acos(1 - 2 * i / count)
    azimuth = math.pi * (1 + 5**0.5) * i
    return radius * torch.stack(
        [torch.sin(polar) * torch.cos(azimuth), torch.sin(polar) * torch.sin(azimuth), torch.cos(polar)], dim=1
    ).float()


def _colour(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour function of position, in [0, 1]."""
    return (points / 0.8 + 0.5).clamp(0, 1)


def test_queries_on_and_near_the_surface_return_the_sampled_colours() -> None:
    points = _sphere_samples(60_000)
    grid = ColorGrid.from_samples(points, _colour(points), resolution=64)
    queries = _sphere_samples(2_000, radius=0.4)
    moved = queries * (1 + 0.02)  # off the sampled surface by under one cell, as decimation moves it
    for where in (queries, moved):
        error = (grid(where) - _colour(queries)).abs()
        assert error.mean() < 0.01 and error.max() < 0.05


def test_far_from_any_sample_is_neutral_grey() -> None:
    points = _sphere_samples(20_000)
    grid = ColorGrid.from_samples(points, _colour(points), resolution=64)
    assert torch.allclose(grid(torch.zeros(1, 3)), torch.full((1, 3), 0.5))


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ColorGrid.from_samples(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        ColorGrid.from_samples(torch.zeros(5, 3), torch.zeros(5, 4))
