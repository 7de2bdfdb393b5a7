"""The image_to_3d stage on the tiny preset: meshes, coloured gaussians and texture bakes.

Most checks plant the analytic sphere (the ``random`` mode's field) over the tiny demo field, so
that shapes and colours are known exactly; the tiny demo itself is tested in
``tests/models/triposr/test_planted_demo.py`` and below by an input-dependence check.
"""

import numpy as np
import pytest

from gen3d.config import load_preset
from gen3d.errors import InputError
from gen3d.mesh.clean import clean
from gen3d.models.triposr.planted import (
    COLOR_LOGITS,
    SPHERE_RADIUS,
    plant_sphere_in_weights,
)
from gen3d.results import Remeshed
from gen3d.stages.image_to_3d import ImageTo3D, ShapeRequest, build_image_to_3d, warm_up_image


@pytest.fixture(scope="module")
def demo() -> ImageTo3D:
    return build_image_to_3d(load_preset("tiny").image_to_3d)


@pytest.fixture(scope="module")
def stage() -> ImageTo3D:
    sphere = build_image_to_3d(load_preset("tiny").image_to_3d)
    plant_sphere_in_weights(sphere.model)
    return sphere


def test_tiny_demo_answers_its_input_and_is_deterministic(demo: ImageTo3D) -> None:
    disc = warm_up_image(demo.cond_size)
    bar = np.full_like(disc, 127)
    bar[20:44, 8:56] = (40, 90, 200)
    shapes = [demo.generate(image, ShapeRequest("mesh", 32)).mesh for image in (disc, bar, disc)]
    assert np.array_equal(shapes[0].vertices, shapes[2].vertices)
    assert shapes[0].vertices.shape != shapes[1].vertices.shape or not np.allclose(shapes[0].vertices, shapes[1].vertices)
    assert not np.allclose(shapes[0].vertex_colors.mean(axis=0), shapes[1].vertex_colors.mean(axis=0), atol=5)


def test_sphere_planted_for_any_image(stage: ImageTo3D) -> None:
    rng = np.random.default_rng(0)
    for image in (np.zeros((64, 64, 3), np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)):
        asset = stage.generate(image, ShapeRequest("mesh", stage.cfg.mc_resolution))
        radii = np.linalg.norm(asset.mesh.vertices, axis=1)
        # Planting at the tiny model's token resolution is blocky: within 15 %, median within 2 %.
        assert np.median(radii) == pytest.approx(SPHERE_RADIUS, rel=0.02)
        assert np.all(np.abs(radii - SPHERE_RADIUS) < 0.15 * SPHERE_RADIUS)
        assert asset.gaussians is None and asset.color_field is None


def test_splat_gaussians_sit_on_the_surface_with_field_colours(stage: ImageTo3D) -> None:
    asset = stage.generate(np.full((64, 64, 3), 127, np.uint8), ShapeRequest("gaussians", stage.cfg.mc_resolution))
    gaussians = asset.gaussians
    assert len(gaussians) == stage.cfg.splat_count
    radii = np.linalg.norm(gaussians.means, axis=1)
    assert np.median(radii) == pytest.approx(SPHERE_RADIUS, rel=0.02)
    assert np.all(np.abs(radii - SPHERE_RADIUS) < 0.15 * SPHERE_RADIUS)
    rgb = 0.5 + 0.28209479177387814 * gaussians.f_dc
    # The planted colour field is constant, so every gaussian carries the same colour.
    assert np.ptp(rgb, axis=0).max() < 1e-3


def test_precision_without_a_torch_dtype_is_refused() -> None:
    cfg = load_preset("tiny", {"image_to_3d": {"precision": "fp8"}}).image_to_3d
    with pytest.raises(ValueError, match="image_to_3d.precision"):
        build_image_to_3d(cfg)


def test_wrong_image_shape_is_a_contract_error_not_an_input_error(stage: ImageTo3D) -> None:
    with pytest.raises(ValueError, match="image") as info:
        stage.generate(np.zeros((64, 64, 4), np.uint8), ShapeRequest("mesh", 32))
    assert not isinstance(info.value, InputError)  # the background stage's output, not the client's: a 500


def test_colour_field_kept_for_a_bake_and_the_bake_follows_the_colour_field(stage: ImageTo3D) -> None:
    asset = stage.generate(np.full((64, 64, 3), 127, np.uint8), ShapeRequest("mesh", 32, keep_color_field=True))
    assert asset.color_field is not None and asset.color_field.dtype == np.float16
    textured = stage.bake(Remeshed(clean(asset.mesh), 64, asset.color_field))
    assert textured.texture.shape == (64, 64, 3)
    # The planted field's colour is constant: every covered texel carries it.
    expected = np.round(255 / (1 + np.exp(-np.array(COLOR_LOGITS))))
    np.testing.assert_allclose(np.median(textured.texture.reshape(-1, 3), axis=0), expected, atol=2)
