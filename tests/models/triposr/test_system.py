"""TripoSR end to end on the tiny preset: shapes, inputs, planted-sphere meshes, precision."""

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from gen3d.errors import StageOutputError
from gen3d.mesh.isosurface import marching_cubes
from gen3d.models.triposr import TripoSR, TripoSRConfig, mesh_to_trimesh
from gen3d.models.triposr.planted import COLOR_LOGITS, SPHERE_RADIUS, plant_sphere


def test_forward_shapes_and_input_kinds(tiny_model: TripoSR) -> None:
    cfg = tiny_model.cfg
    size = cfg.cond_image_size
    images = torch.rand(2, size, size, 3)
    codes = tiny_model(images)
    side = 2 * cfg.tokenizer.plane_size
    assert codes.shape == (2, 3, cfg.post_processor.out_channels, side, side)
    as_uint8 = (images * 255).round().to(torch.uint8).numpy()
    from_arrays = tiny_model([as_uint8[0], as_uint8[1]])
    from_pil = tiny_model([Image.fromarray(a) for a in as_uint8])
    torch.testing.assert_close(from_arrays, from_pil)
    torch.testing.assert_close(from_arrays, tiny_model(torch.from_numpy(as_uint8).float() / 255))


@pytest.mark.parametrize(
    "bad",
    [torch.rand(1, 64, 64, 4), torch.rand(64, 64, 3), torch.rand(1, 64, 64, 3) * 2, [], [np.zeros((8, 8), np.uint8)]],
)
def test_bad_images_raise_value_error_naming_them(tiny_model: TripoSR, bad: object) -> None:
    with pytest.raises(ValueError, match=r"^images"):
        tiny_model(bad)


def test_planted_sphere_mesh_matches_analytic(tiny_model: TripoSR) -> None:
    code = plant_sphere(tiny_model, steepness=0.5)
    mesh = tiny_model.extract_mesh(code, resolution=64)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int64 and mesh.vertex_colors.dtype == np.uint8
    tm = mesh_to_trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent
    analytic = 4.0 / 3.0 * math.pi * SPHERE_RADIUS**3
    assert tm.volume > 0  # outward faces
    assert abs(tm.volume / analytic - 1) < 0.01
    np.testing.assert_allclose(mesh.vertices.min(0), -SPHERE_RADIUS, rtol=0.01)
    np.testing.assert_allclose(mesh.vertices.max(0), SPHERE_RADIUS, rtol=0.01)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii / SPHERE_RADIUS - 1).max() < 0.01
    expected_rgb = [round(255 / (1 + math.exp(-logit))) for logit in COLOR_LOGITS]
    assert (mesh.vertex_colors == np.array(expected_rgb, np.uint8)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_field_keeps_the_planted_mesh(tiny_model: TripoSR, dtype: torch.dtype) -> None:
    code = plant_sphere(tiny_model, steepness=6.0)
    reference = tiny_model.density_grid(code, resolution=64) > 25.0
    reference_volume = mesh_to_trimesh(tiny_model.extract_mesh(code, resolution=64)).volume
    half = tiny_model.to(dtype)
    assert half.dtype == dtype
    occupied = half.density_grid(code, resolution=64) > 25.0
    iou = (occupied & reference).sum() / (occupied | reference).sum()
    assert iou >= 0.99
    assert abs(mesh_to_trimesh(half.extract_mesh(code, resolution=64)).volume / reference_volume - 1) < 0.01


def test_empty_field_raises_stage_output_error(tiny_model: TripoSR) -> None:
    code = plant_sphere(tiny_model, steepness=0.5)
    with pytest.raises(StageOutputError, match="empty mesh"):
        tiny_model.extract_mesh(code, resolution=16, threshold=1e6)


def test_nan_field_raises_stage_output_error(tiny_model: TripoSR) -> None:
    code = plant_sphere(tiny_model, steepness=0.5)
    code[2, 3] = float("nan")  # a zero decoder weight still propagates NaN
    with pytest.raises(StageOutputError, match="NaN"):
        tiny_model.extract_mesh(code, resolution=16)


def test_from_config_builds_in_requested_dtype() -> None:
    model = TripoSR.from_config(TripoSRConfig.tiny(), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.image_tokenizer.image_mean.dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32
    assert model(torch.rand(1, 64, 64, 3)).dtype == torch.bfloat16


def test_planted_sphere_matches_analytic_with_reference_face_count(tiny_model: TripoSR) -> None:
    from skimage.measure import marching_cubes as reference_marching_cubes

    resolution = 64
    density = tiny_model.density_grid(plant_sphere(tiny_model, steepness=0.5), resolution=resolution)
    surface = marching_cubes(density, 25.0)
    tm = trimesh.Trimesh(surface.vertices.numpy(), surface.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    radius = tiny_model.cfg.renderer.radius
    cell = 2 * radius / (resolution - 1)
    assert tm.volume > 0  # outward faces
    assert abs(tm.volume * cell**3 / (4 / 3 * math.pi * SPHERE_RADIUS**3) - 1) < 0.01
    world = surface.vertices.numpy() * cell - radius
    np.testing.assert_allclose(world.min(0), -SPHERE_RADIUS, rtol=0.01)
    np.testing.assert_allclose(world.max(0), SPHERE_RADIUS, rtol=0.01)
    _, reference_faces, _, _ = reference_marching_cubes(density.numpy(), 25.0)
    assert abs(len(surface.faces) / len(reference_faces) - 1) < 0.02
