"""Full-size and CUDA checks (skipped without a GPU)."""

import pytest
import torch

from gen3d.mesh.isosurface import marching_cubes
from gen3d.models.triposr import TripoSR, TripoSRConfig
from gen3d.models.triposr.planted import plant_sphere

pytestmark = pytest.mark.gpu


def test_cuda_marching_equals_cpu() -> None:
    model = TripoSR.from_config(TripoSRConfig.tiny(), device="cuda")
    code = plant_sphere(model, steepness=6.0)
    density = model.density_grid(code, resolution=96)
    on_gpu = marching_cubes(density, 25.0)
    on_cpu = marching_cubes(density.cpu(), 25.0)
    assert torch.equal(on_gpu.faces.cpu(), on_cpu.faces)
    torch.testing.assert_close(on_gpu.vertices.cpu(), on_cpu.vertices)


def test_official_size_bf16_scene_code_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = TripoSR.from_config(TripoSRConfig.official(), device="cuda")
    images = torch.rand(1, 512, 512, 3, device="cuda")
    with torch.inference_mode():
        reference = model(images)
        half = model.to(torch.bfloat16)(images).float()
    assert reference.shape == (1, 3, 40, 64, 64)
    assert (half - reference).norm() / reference.norm() < 0.05
