"""The image_to_3d stage with TRELLIS on the tiny preset: meshes, its own gaussians, bakes, frames."""

import numpy as np
import pytest
import trimesh

from gen3d.config import load_preset
from gen3d.mesh.clean import clean
from gen3d.results import Remeshed, SurfaceColors
from gen3d.stages.image_to_3d import FlowOptions, ImageTo3D, ShapeRequest, build_image_to_3d, warm_up_image
from gen3d.stages.image_to_3d_trellis import MODEL_FROM_TRELLIS, TrellisImageTo3DStage


@pytest.fixture(scope="module")
def stage() -> ImageTo3D:
    return build_image_to_3d(load_preset("quality_tiny").image_to_3d)


def _bar_image() -> np.ndarray:
    image = np.zeros((518, 518, 3), np.uint8)
    image[180:340, 60:460] = (40, 90, 200)
    return image


def test_the_preset_builds_trellis(stage: ImageTo3D) -> None:
    assert isinstance(stage, TrellisImageTo3DStage)
    assert stage.cond_size == 518


def test_mesh_is_closed_oriented_and_answers_the_input(stage: ImageTo3D) -> None:
    disc = stage.generate(warm_up_image(518, backdrop=0), ShapeRequest("mesh", 0, seed=1))
    bar = stage.generate(_bar_image(), ShapeRequest("mesh", 0, seed=1))
    for asset in (disc, bar):
        mesh = clean(asset.mesh)
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        assert len(mesh.faces) > 100 and tm.volume > 0
        assert np.abs(asset.mesh.vertices).max() <= 0.55  # TRELLIS's unit cube
        assert asset.gaussians is None and asset.color_field is None
    # The demo pillow follows the silhouette: the bar is wider than tall, the disc is round.
    def spans(vertices: np.ndarray) -> np.ndarray:
        return vertices.max(0) - vertices.min(0)
    assert spans(bar.mesh.vertices)[1] > 1.5 * spans(bar.mesh.vertices)[2]
    assert spans(disc.mesh.vertices)[1] == pytest.approx(spans(disc.mesh.vertices)[2], rel=0.2)


def test_same_seed_same_asset_other_seed_other_colours(stage: ImageTo3D) -> None:
    image = warm_up_image(518, backdrop=0)
    first, again = (stage.generate(image, ShapeRequest("mesh", 0, seed=7)) for _ in range(2))
    other = stage.generate(image, ShapeRequest("mesh", 0, seed=8))
    assert np.array_equal(first.mesh.vertices, again.mesh.vertices)
    assert np.array_equal(first.mesh.vertex_colors, again.mesh.vertex_colors)
    assert not np.array_equal(first.mesh.vertex_colors, other.mesh.vertex_colors)


def test_sampler_options_change_the_result(stage: ImageTo3D) -> None:
    image = warm_up_image(518, backdrop=0)
    base = stage.generate(image, ShapeRequest("mesh", 0, seed=3))
    fewer = stage.generate(image, ShapeRequest("mesh", 0, seed=3, flow=FlowOptions(slat_steps=1, slat_cfg=0.0)))
    assert not np.array_equal(base.mesh.vertex_colors, fewer.mesh.vertex_colors)


def test_splat_is_trellis_own_gaussians_in_the_model_frame(stage: ImageTo3D) -> None:
    asset = stage.generate(warm_up_image(518, backdrop=0), ShapeRequest("gaussians", 0, seed=2))
    gaussians = asset.gaussians
    assert gaussians is not None and len(gaussians) % 32 == 0 and len(gaussians) > 0
    norms = np.linalg.norm(gaussians.rotations, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert np.isfinite(gaussians.log_scales).all() and np.isfinite(gaussians.opacity).all()
    assert np.abs(gaussians.means).max() < 0.6


def test_frame_turns_trellis_front_to_ours() -> None:
    trellis_front, ours_front = np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0])
    assert np.allclose(MODEL_FROM_TRELLIS @ trellis_front, ours_front)
    assert np.allclose(MODEL_FROM_TRELLIS @ np.array([0.0, 0.0, 1.0]), [0.0, 0.0, 1.0])
    assert np.linalg.det(MODEL_FROM_TRELLIS) == pytest.approx(1.0)


def test_bake_reads_the_full_mesh_colours(stage: ImageTo3D) -> None:
    asset = stage.generate(warm_up_image(518, backdrop=0), ShapeRequest("mesh", 0, seed=4, keep_color_field=True))
    assert isinstance(asset.color_field, SurfaceColors)
    assert asset.color_field.points is asset.mesh.vertices  # shared, not copied
    textured = stage.bake(Remeshed(clean(asset.mesh), 64, asset.color_field))
    assert textured.texture.shape == (64, 64, 3)
    # The atlas holds the surface's colours: its mean is the vertex colours' mean, within a few levels.
    mean_vertex = asset.mesh.vertex_colors.reshape(-1, 3).mean(0)
    assert np.abs(textured.texture.reshape(-1, 3).mean(0) - mean_vertex).max() < 25
    with pytest.raises(TypeError, match="SurfaceColors"):
        stage.bake(Remeshed(clean(asset.mesh), 64, np.zeros((3, 2, 4, 4), np.float16)))


def test_compiled_stage_makes_the_eager_asset(stage: ImageTo3D) -> None:
    """``trellis.compile`` (inductor on the CPU, fp32) changes how the blocks run, not what they make."""
    cfg = load_preset("quality_tiny").image_to_3d
    compiled = build_image_to_3d(cfg.model_copy(update={"trellis": cfg.trellis.model_copy(update={"compile": True})}))
    blocks = compiled.model.slat_flow_model.blocks
    assert all("forward_dense" in vars(block) for block in blocks)  # the compiled function, per block
    request = ShapeRequest("gaussians", 0, seed=5)
    eager, fast = (s.generate(_bar_image(), request) for s in (stage, compiled))
    assert np.array_equal(eager.mesh.faces, fast.mesh.faces)
    np.testing.assert_allclose(fast.mesh.vertices, eager.mesh.vertices, atol=1e-5)
    assert np.abs(fast.mesh.vertex_colors.astype(int) - eager.mesh.vertex_colors).max() <= 1
    np.testing.assert_allclose(fast.gaussians.means, eager.gaussians.means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.gaussians.f_dc, eager.gaussians.f_dc, rtol=1e-4, atol=1e-4)
