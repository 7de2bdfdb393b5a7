"""CPU renderers, validators' cameras, mesh-vs-splat agreement and hamburger orientation."""

from pathlib import Path

import numpy as np
import pytest

from gen3d.config import ImageTo3DConfig
from gen3d.orientation import FLIP_ABOUT_X, rotate_gaussians
from gen3d.results import Gaussians
from gen3d.splat.agreement import measure_agreement, procedural_solids
from gen3d.splat.ply import read_splat_ply
from gen3d.splat.render import (
    mip_pyramid,
    orbit_camera,
    psnr,
    render_splat,
    render_textured_mesh,
    sample_bilinear,
    silhouette_iou,
    silhouette_taper,
    validator_cameras,
    validator_scene,
)

HAMBURGER = Path(__file__).resolve().parent.parent / "fixtures" / "hamburger.ply"


def test_validator_cameras_orbit_above_and_theta_zero_looks_from_plus_z() -> None:
    cameras = validator_cameras(16, 64)
    assert len(cameras) == 16
    front = cameras[0]
    position = -front.rotation.T @ front.translation
    np.testing.assert_allclose(np.linalg.norm(position), 2.5)
    np.testing.assert_allclose(position, [0.0, 2.5 * np.sin(np.deg2rad(15)), 2.5 * np.cos(np.deg2rad(15))], atol=1e-9)
    # +X projects to the right of the image centre, +Y above it (smaller row index).
    pixels = front.project(front.to_camera(np.array([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0]])))
    assert pixels[0, 0] > 32 and pixels[1, 1] < front.project(front.to_camera(np.zeros((1, 3))))[0, 1]
    np.testing.assert_allclose(front.focal, 32 / np.tan(np.deg2rad(49.1 / 2)))
    np.testing.assert_allclose(cameras[-1].rotation, cameras[0].rotation, atol=1e-9)  # 0° and 360°


def one_gaussian(opacity_logit: float) -> Gaussians:
    return Gaussians(
        means=np.zeros((1, 3), np.float32),
        f_dc=np.full((1, 3), (0.2 - 0.5) / 0.28209479177387814, np.float32),
        opacity=np.array([opacity_logit], np.float32),
        log_scales=np.log(np.full((1, 3), 0.1, np.float32)),
        rotations=np.array([[1, 0, 0, 0]], np.float32),
    )


def test_single_gaussian_composites_over_white() -> None:
    scene = validator_scene(one_gaussian(8.0))
    render = render_splat(scene, orbit_camera(0.0, size=33))
    centre = render.rgb[16, 16]
    # A lone gaussian has zero extent: left unscaled, so its opacity stays sigmoid(8) (~0.9997).
    assert 0.0 < render.alpha[16, 16] <= 0.999 + 1e-6
    np.testing.assert_allclose(centre, 0.2 * render.alpha[16, 16] + (1 - render.alpha[16, 16]), atol=1e-5)
    np.testing.assert_allclose(render.rgb[0, 0], 1.0)  # background far from the gaussian


def test_metrics() -> None:
    a = np.zeros((4, 4))
    a[:2] = 1
    b = np.zeros((4, 4))
    b[1:3] = 1
    assert silhouette_iou(a, b) == pytest.approx(1 / 3)
    img = np.zeros((4, 4, 3))
    assert psnr(img, img + 0.1) == pytest.approx(20.0)
    assert psnr(img, img) == float("inf")


@pytest.mark.parametrize("name", ["sphere", "box", "torus", "l_shape", "ring"])
def test_splat_matches_mesh_at_default_count(name: str) -> None:
    """At the validators' 518 px, one oblique view; scripts/splat_agreement.py runs all 16."""
    camera = validator_cameras(16, 518)[2]
    result = measure_agreement(procedural_solids()[name], ImageTo3DConfig().splat_count, [camera])
    assert result.mean_iou >= 0.95
    assert result.mean_psnr >= 28.0
    assert 1e6 < result.file_bytes < 2.5e6


def test_hamburger_renders_upright_under_plus_y() -> None:
    """The bun's dome on top narrows the silhouette upward; the flipped file does the opposite."""
    written = read_splat_ply(HAMBURGER)
    flipped = rotate_gaussians(written, FLIP_ABOUT_X)
    cameras = validator_cameras(16, 96)[::4]
    tapers = {}
    for label, splat in (("written", written), ("flipped", flipped)):
        scene = validator_scene(splat)
        tapers[label] = np.array([silhouette_taper(render_splat(scene, c).alpha) for c in cameras])
    assert (tapers["written"] < tapers["flipped"]).all()
    assert tapers["written"].mean() < 1.35 < tapers["flipped"].mean()


def textured_square(half: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square of side 2 * half facing +Z (the first validator camera), UVs in glTF convention:
    the image's top row (v = 0) on the square's top edge (+Y)."""
    vertices = np.array([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    uvs = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    return vertices, np.array([[0, 1, 2], [0, 2, 3]]), uvs


def test_textured_render_puts_the_image_top_left_up_and_left() -> None:
    texture = np.zeros((2, 2, 3), np.uint8)
    texture[0, 0] = (255, 0, 0)  # top left: red
    texture[0, 1] = (0, 255, 0)  # top right: green
    texture[1, :] = (0, 0, 255)  # bottom: blue
    vertices, faces, uvs = textured_square(0.5)
    camera = orbit_camera(0.0, size=64, elevation_deg=0.0)
    render = render_textured_mesh(vertices, faces, uvs, texture, camera, mipmaps=False)
    corner = camera.project(camera.to_camera(np.array([[-0.4, 0.4, 0.0], [0.4, 0.4, 0.0], [0.0, -0.4, 0.0]])))
    (lx, ly), (rx, ry), (bx, by) = corner.astype(int)
    np.testing.assert_allclose(render.rgb[ly, lx], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(render.rgb[ry, rx], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(render.rgb[by, bx], [0, 0, 1], atol=1e-6)
    assert render.alpha[0, 0] == 0.0 and render.rgb[0, 0].tolist() == [1.0, 1.0, 1.0]


def test_mip_pyramid_keeps_the_mean_and_bilinear_hits_texel_centres() -> None:
    texture = np.random.default_rng(0).random((8, 8, 3))
    pyramid = mip_pyramid(texture)
    assert [level.shape[0] for level in pyramid] == [8, 4, 2, 1]
    np.testing.assert_allclose(pyramid[-1][0, 0], texture.mean(axis=(0, 1)))
    centres = (np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="xy"), -1).reshape(-1, 2) + 0.5) / 8
    np.testing.assert_allclose(sample_bilinear(texture, centres), texture.reshape(-1, 3))


def test_mipmaps_average_a_texture_too_fine_for_the_pixels() -> None:
    """A 256² one-texel checker on a square ~40 px wide: mipmapping greys it out, point sampling aliases."""
    checker = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    texture = np.repeat(checker[:, :, None], 3, axis=2)
    vertices, faces, uvs = textured_square(0.4)
    camera = orbit_camera(0.0, size=96, elevation_deg=0.0)
    filtered = render_textured_mesh(vertices, faces, uvs, texture, camera)
    aliased = render_textured_mesh(vertices, faces, uvs, texture, camera, mipmaps=False)
    inside = filtered.alpha > 0.5
    np.testing.assert_allclose(filtered.rgb[inside], 0.5, atol=0.02)
    assert aliased.rgb[inside].std() > 0.1
