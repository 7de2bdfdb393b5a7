"""gen3d.models.segmentation.mask_predictors: the torch path reproduces each rembg session's own pre- and post-processing.

rembg's ``predict`` is run with a stand-in for its onnxruntime session that records the network
input and answers a fixed network output, so each ``SessionSpec`` is checked against rembg's
code itself, independently of any network.
"""

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from rembg.sessions import sessions as rembg_sessions

from gen3d.imaging import decode_image
from gen3d.models.segmentation.mask_predictors import (
    SESSION_SPECS,
    RembgPredictor,
    TorchPredictor,
    session_spec,
)
from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.models.segmentation.tiny_onnx import (
    build_tiny_segmentation_model,
    write_tiny_segmentation_model,
)
from gen3d.stages.background import session_options, session_reading
from tests.rembg_home import rembg_home_at

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class RecordingSession:
    """Stands in for ``onnxruntime.InferenceSession``: records the feed, returns ``output``."""

    def __init__(self, output: np.ndarray) -> None:
        self.output = output
        self.feed: np.ndarray | None = None

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="input")]

    def run(self, _: None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feed = feed["input"]
        return [self.output]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny net in a private rembg home (rembg's session classes load it instead of their download)."""
    with rembg_home_at(tmp_path_factory.mktemp("rembg_home")) as home:
        yield write_tiny_segmentation_model(home / "models" / "u2net_custom" / "tiny.onnx")


def teapot() -> np.ndarray:
    return decode_image((FIXTURES / "teapot.png").read_bytes(), max_pixels=4096 * 4096)


def smooth_logits(size: int) -> np.ndarray:
    """(1, 1, S, S) float32: a blob over a gradient, values in about [-6, 6] like a net's logits."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    blob = 12 * np.exp(-((xx - 0.45) ** 2 + (yy - 0.55) ** 2) / 0.05) - 6 + 2 * xx
    return blob.astype(np.float32)[None, None]


def torch_predictor(name: str) -> TorchPredictor:
    """The tiny net behind session ``name``'s processing, on the CPU."""
    spec = SESSION_SPECS[name]
    net = OnnxTorchModule(build_tiny_segmentation_model(), (1, 3, spec.size, spec.size))
    return TorchPredictor(net, spec, torch.device("cpu"))


@pytest.mark.parametrize("name", sorted(SESSION_SPECS))
def test_spec_reproduces_rembgs_processing(name: str, tiny_model: Path) -> None:
    spec = SESSION_SPECS[name]
    session = session_reading(rembg_sessions[name], tiny_model)(name, session_options(1), model_path=str(tiny_model))
    recorder = RecordingSession(smooth_logits(spec.size))
    session.inner_session = recorder
    image = teapot()
    rembg_mask = np.asarray(session.predict(Image.fromarray(image))[0])
    predictor = torch_predictor(name)

    # 1. network input: same size, scaling, mean and std (resampling differs: Lanczos vs bicubic).
    ours = predictor.preprocess(image).numpy()
    assert ours.shape == recorder.feed.shape == (1, 3, spec.size, spec.size)
    assert np.abs(ours - recorder.feed).mean(axis=(0, 2, 3)).max() < 0.01 / min(spec.std)
    assert np.abs((ours - recorder.feed).mean(axis=(0, 2, 3))).max() < 0.005 / min(spec.std)  # no offset
    # 2. mask from the same network output: same activation, normalisation and resize back.
    mask = predictor.postprocess(torch.from_numpy(recorder.output), *image.shape[:2]).numpy()
    assert mask.shape == rembg_mask.shape == image.shape[:2]
    assert np.abs(mask.astype(int) - rembg_mask).max() <= 3


def test_torch_predictor_cuts_out_like_rembgs_session(tiny_model: Path) -> None:
    cls = rembg_sessions["u2net_custom"]
    session = session_reading(cls, tiny_model)("u2net_custom", session_options(1), model_path=str(tiny_model))
    image = teapot()
    expected = RembgPredictor(session)(image) >= 128
    got = torch_predictor("u2net_custom")(image) >= 128
    assert (expected & got).sum() / (expected | got).sum() >= 0.97


def test_unknown_session_has_no_torch_path() -> None:
    with pytest.raises(ValueError, match="device: cpu"):
        session_spec("silueta")


def test_cuda_graphs_need_cuda() -> None:
    spec = SESSION_SPECS["u2net_custom"]
    net = OnnxTorchModule(build_tiny_segmentation_model(), (1, 3, spec.size, spec.size))
    with pytest.raises(ValueError, match="CUDA graphs"):
        TorchPredictor(net, spec, torch.device("cpu"), cuda_graphs=True)


def test_network_size_must_match_the_session() -> None:
    net = OnnxTorchModule(build_tiny_segmentation_model(), (1, 3, 64, 64))
    with pytest.raises(ValueError, match="session size 320"):
        TorchPredictor(net, SESSION_SPECS["u2net"], torch.device("cpu"))
