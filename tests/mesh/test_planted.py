"""The planted surfaces and colour fields the other mesh tests and benchmarks rely on."""

import pytest
import torch

from gen3d.mesh.planted import BOX_RADIUS, COLOR_FIELDS, blob_field, bumpy_blob
from gen3d.results import MeshAsset


def test_blob_vertices_lie_on_the_field_zero() -> None:
    mesh = bumpy_blob(64)
    cell = 2 * BOX_RADIUS / 63
    assert float(blob_field(torch.from_numpy(mesh.vertices)).abs().max()) < 0.5 * cell


def test_blob_at_resolution_256_is_as_large_as_a_real_extraction(blob: MeshAsset) -> None:
    assert 180_000 < len(blob.faces) < 240_000


@pytest.mark.parametrize("name", sorted(COLOR_FIELDS))
def test_colour_fields_give_rgb_in_range(name: str) -> None:
    points = torch.rand(1000, 3) * 2 * BOX_RADIUS - BOX_RADIUS
    colors = COLOR_FIELDS[name](points)
    assert colors.shape == (1000, 3) and colors.min() >= 0 and colors.max() <= 1
    assert colors.std(dim=0).max() > 0.2  # the colour varies over space
