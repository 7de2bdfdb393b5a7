"""Planted shapes for random-weight TRELLIS: real-object voxel counts, input-dependent demos."""

import torch

from gen3d.models.trellis.planted import (
    SHELL_RADIUS,
    planted_distance,
    planted_structure,
)


def _disc_image(radius: float, size: int = 64) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.zeros(3, size, size)
    image[:, (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (radius * size) ** 2] = 0.7
    return image


def test_sphere_shell_has_a_real_objects_voxel_count_around_the_radius() -> None:
    coords = planted_structure("sphere", 64, None)
    assert coords.dtype == torch.int32 and coords.shape[1] == 4 and (coords[:, 0] == 0).all()
    assert 15_000 < coords.shape[0] < 30_000
    centres = (coords[:, 1:].float() + 0.5) / 64 - 0.5
    assert (centres.norm(dim=1) - SHELL_RADIUS).abs().max() <= 1.5 / 64


def test_silhouette_follows_the_input() -> None:
    small, large = (planted_structure("silhouette", 32, _disc_image(r)) for r in (0.2, 0.4))
    assert 0 < small.shape[0] < large.shape[0]
    assert torch.equal(planted_structure("silhouette", 32, _disc_image(0.2)), small)


def test_distances_are_negative_inside_and_positive_outside() -> None:
    points = torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.0, 0.0]])
    assert (planted_distance("sphere", points, None).sign() == torch.tensor([-1.0, 1.0])).all()
    pillow = planted_distance("silhouette", points, _disc_image(0.3))
    assert pillow[0] < 0 < pillow[1]
