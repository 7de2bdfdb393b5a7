"""The image_to_3d stage on the tiny preset: planted demo sphere, mesh and coloured gaussians."""

import numpy as np
import pytest

from gen3d.config import load_preset
from gen3d.image_to_3d import ImageTo3D
from gen3d.triposr.planted import SPHERE_RADIUS


@pytest.fixture(scope="module")
def stage() -> ImageTo3D:
    return ImageTo3D.from_config(load_preset("tiny").image_to_3d)


def test_random_modes_plant_a_sphere_for_any_image(stage: ImageTo3D) -> None:
    rng = np.random.default_rng(0)
    for image in (np.zeros((64, 64, 3), np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)):
        asset = stage.generate(image)
        radii = np.linalg.norm(asset.mesh.vertices, axis=1)
        # Planting at the tiny model's token resolution is blocky: within 15 %, median within 2 %.
        assert np.median(radii) == pytest.approx(SPHERE_RADIUS, rel=0.02)
        assert np.all(np.abs(radii - SPHERE_RADIUS) < 0.15 * SPHERE_RADIUS)
        assert asset.gaussians is None
        assert set(asset.timings) == {"scene_code", "mesh"}


def test_splat_gaussians_sit_on_the_surface_with_field_colours(stage: ImageTo3D) -> None:
    asset = stage.generate(np.full((64, 64, 3), 127, np.uint8), splat=True)
    gaussians = asset.gaussians
    assert len(gaussians) == stage.cfg.splat_count
    radii = np.linalg.norm(gaussians.means, axis=1)
    assert np.median(radii) == pytest.approx(SPHERE_RADIUS, rel=0.02)
    assert np.all(np.abs(radii - SPHERE_RADIUS) < 0.15 * SPHERE_RADIUS)
    rgb = 0.5 + 0.28209479177387814 * gaussians.f_dc
    # The planted colour field is constant, so every gaussian carries the same colour.
    assert np.ptp(rgb, axis=0).max() < 1e-3
    assert "splat" in asset.timings


def test_precision_without_a_torch_dtype_is_refused() -> None:
    cfg = load_preset("tiny", {"image_to_3d": {"precision": "fp8"}}).image_to_3d
    with pytest.raises(ValueError, match="image_to_3d.precision"):
        ImageTo3D.from_config(cfg)


def test_wrong_image_shape_is_an_input_error(stage: ImageTo3D) -> None:
    with pytest.raises(ValueError, match="image"):
        stage.generate(np.zeros((64, 64, 4), np.uint8))
