"""Small sparse voxel sets for the sparse-module tests, and a guard for the reference's convolution."""

import functools
import types
from collections.abc import Callable

import torch


def shell_coords(resolution: int, radii: list[float], seed: int, thickness: float = 0.9) -> torch.Tensor:
    """Voxels within ``thickness`` of a sphere's surface, one sphere per batch item.

    Rows of one item are contiguous (items in order) but shuffled inside the item, so code that
    assumes sorted voxels fails the tests.

    Args:
        resolution: grid size R; coordinates lie in [0, R).
        radii: one radius (in voxels) per batch item, centred in the grid with a small seeded jitter.
        seed: shuffling and jitter seed.

    Returns:
        [N, 4] int32 rows (batch, x, y, z).
    """
    generator = torch.Generator().manual_seed(seed)
    axis = torch.arange(resolution, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    items = []
    for batch, radius in enumerate(radii):
        centre = (resolution - 1) / 2 + torch.rand(3, generator=generator) - 0.5
        distance = (grid - centre).norm(dim=-1)
        voxels = grid[(distance - radius).abs() < thickness].int()
        voxels = voxels[torch.randperm(voxels.shape[0], generator=generator)]
        items.append(torch.cat([torch.full((voxels.shape[0], 1), batch, dtype=torch.int32), voxels], dim=1))
    return torch.cat(items)


def random_feats(count: int, channels: int, seed: int) -> torch.Tensor:
    """[count, channels] standard normal features from ``seed``."""
    return torch.randn(count, channels, generator=torch.Generator().manual_seed(seed))


def single_threaded(compute: Callable[[types.SimpleNamespace], dict]) -> Callable[[types.SimpleNamespace], dict]:
    """Run a reference computation on one CPU thread.

    spconv 2.3.8's CPU convolution (native algorithm) races under several OpenMP threads: repeated
    calls on identical inputs differ by about 1% at random. On one thread it is deterministic.
    """

    @functools.wraps(compute)
    def run(ref: types.SimpleNamespace) -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return compute(ref)
        finally:
            torch.set_num_threads(threads)

    return run


def half_like_release(module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """Cast linear and convolution weights to ``dtype``, keeping norms in float32, as the release does."""
    from gen3d.models.trellis.sparse.conv import SubmanifoldKernel

    for part in module.modules():
        if isinstance(part, torch.nn.Linear | SubmanifoldKernel):
            part.to(dtype)
    return module
