"""The tiny demo field follows its input image, through TripoSR's own forward."""

import numpy as np
import pytest
import torch
import trimesh

from gen3d.models.triposr import TripoSR, TripoSRConfig
from gen3d.models.triposr.decoder import NeRFMLPConfig
from gen3d.models.triposr.planted_demo import plant_demo_in_weights
from gen3d.models.triposr.post_processor import TriplaneUpsampleConfig
from gen3d.results import MeshAsset

SIZE, GREY = 64, 128
RESOLUTION = 48


def demo_model(seed: int = 0) -> TripoSR:
    torch.manual_seed(seed)
    model = TripoSR.from_config(TripoSRConfig.tiny())
    plant_demo_in_weights(model)
    return model


@pytest.fixture(scope="module")
def model() -> TripoSR:
    return demo_model()


def on_grey(rows: slice, cols: slice, rgb: tuple[int, int, int]) -> np.ndarray:
    """A prepared image: a coloured rectangle on the grey the background stage composites onto."""
    image = np.full((SIZE, SIZE, 3), GREY, np.uint8)
    image[rows, cols] = rgb
    return image


RED_SQUARE = on_grey(slice(12, 52), slice(12, 52), (220, 30, 30))
BLUE_BAR = on_grey(slice(12, 52), slice(26, 38), (30, 60, 220))  # tall and narrow


def mesh_of(model: TripoSR, image: np.ndarray) -> MeshAsset:
    with torch.no_grad():
        return model.extract_mesh(model([image])[0], resolution=RESOLUTION)


def test_the_shape_follows_the_silhouette(model: TripoSR) -> None:
    square, bar = mesh_of(model, RED_SQUARE), mesh_of(model, BLUE_BAR)
    square_extent, bar_extent = np.ptp(square.vertices, axis=0), np.ptp(bar.vertices, axis=0)  # (x, y, z)
    # The camera looks from +x: image columns run along y, rows along z.
    assert bar_extent[1] < 0.6 * square_extent[1]
    assert bar_extent[2] == pytest.approx(square_extent[2], rel=0.1)
    assert bar_extent[2] > 2 * bar_extent[1]
    for mesh, extent in ((square, square_extent), (bar, bar_extent)):
        assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
        assert extent[0] < extent[2]  # a pillow: thinner along the view than across it


def test_the_colour_follows_the_image(model: TripoSR) -> None:
    red = mesh_of(model, RED_SQUARE).vertex_colors[:, :3].astype(float).mean(axis=0)
    blue = mesh_of(model, BLUE_BAR).vertex_colors[:, :3].astype(float).mean(axis=0)
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40


def test_no_object_gives_no_surface(model: TripoSR) -> None:
    from gen3d.errors import StageOutputError

    with pytest.raises(StageOutputError, match="empty mesh"):
        mesh_of(model, np.full((SIZE, SIZE, 3), GREY, np.uint8))


def test_the_same_image_gives_the_same_mesh_whatever_the_random_init() -> None:
    first, second = mesh_of(demo_model(0), RED_SQUARE), mesh_of(demo_model(1), RED_SQUARE)
    np.testing.assert_array_equal(first.vertices, second.vertices)
    np.testing.assert_array_equal(first.faces, second.faces)
    np.testing.assert_array_equal(first.vertex_colors, second.vertex_colors)


def test_every_tensor_keeps_its_shape() -> None:
    torch.manual_seed(0)
    model = TripoSR.from_config(TripoSRConfig.tiny())
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    plant_demo_in_weights(model)
    assert {name: tensor.shape for name, tensor in model.state_dict().items()} == shapes


def test_half_precision_is_refused() -> None:
    torch.manual_seed(0)
    model = TripoSR.from_config(TripoSRConfig.tiny(), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        plant_demo_in_weights(model)


def test_an_architecture_too_small_is_refused() -> None:
    cfg = TripoSRConfig.tiny()
    cfg.post_processor = TriplaneUpsampleConfig(in_channels=32, out_channels=4)
    cfg.decoder = NeRFMLPConfig(in_channels=12, n_neurons=16, n_hidden_layers=3)
    with pytest.raises(ValueError, match="scene code needs 6 channels"):
        plant_demo_in_weights(TripoSR.from_config(cfg))
