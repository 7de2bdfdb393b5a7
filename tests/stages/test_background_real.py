"""The background stage with real weights: IS-Net from the npm package @imgly/background-removal-data.

The package is fetched with ``npm pack`` at test time into ``~/.cache/gen3d`` (outside the
repository; see ``scripts/background_data.py``) and the reassembled model is linked where rembg's
``isnet-general-use`` session finds it: ``<REMBG_HOME>/models/isnet-general-use/``. rembg checks
an md5 only when it downloads; it uses a file already in place as it is, and this file is not
rembg's own export (an fp16 graph), so its integrity comes from the sha256 of every chunk.
Skipped only when npm or the npm registry is unavailable.

Fixtures (tests/fixtures/, MIT, from the TripoSR repository's ``examples/``, 256x256 RGBA
with true alpha): each is composited over two backdrops (``scripts.background_data.scenes``) and
the stage's mask is compared with the fixture's own alpha.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gen3d.config import BackgroundConfig
from gen3d.models.segmentation.mask_predictors import SESSION_SPECS, TorchPredictor
from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.models.segmentation.u2net_onnx import build_rsu_net
from gen3d.stages.background import BackgroundRemoval
from scripts.background_data import (
    NpmUnavailable,
    backdrops,
    composite,
    cutout,
    fetch_isnet,
    iou,
    scenes,
)
from tests.rembg_home import rembg_home_at

SESSION = "isnet-general-use"
THREADS = 2


@pytest.fixture(scope="module")
def isnet_file() -> Path:
    try:
        return fetch_isnet()
    except NpmUnavailable as error:
        pytest.skip(f"npm or the npm registry is unavailable, so no real IS-Net weights: {error}")


@pytest.fixture(scope="module")
def rembg_home(tmp_path_factory: pytest.TempPathFactory, isnet_file: Path) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("rembg_home_real")
    target = home / "models" / SESSION / f"{SESSION}.onnx"
    target.parent.mkdir(parents=True)
    target.symlink_to(isnet_file)
    with rembg_home_at(home):
        yield home


@pytest.fixture(scope="module")
def stage(rembg_home: Path) -> BackgroundRemoval:
    return BackgroundRemoval.from_config(BackgroundConfig(mode="real", session=SESSION, device="cpu", threads=THREADS))


def test_real_isnet_masks_match_the_fixtures_alpha(stage: BackgroundRemoval) -> None:
    scores = {label: iou(stage.remove_background(rgb)[:, :, 3] >= 128, truth) for label, rgb, truth in scenes()}
    assert len(scores) == 10
    assert np.median(list(scores.values())) >= 0.95, scores
    result = stage.process(composite(cutout("horse.png"), backdrops(256, 256)["studio"]))
    assert result.removed_background and result.image.shape == (512, 512, 3)


def test_torch_runs_the_real_graph_like_onnxruntime(isnet_file: Path) -> None:
    model = onnx.load(str(isnet_file))
    size = SESSION_SPECS[SESSION].size
    rgb = composite(cutout("robot.png"), backdrops(256, 256)["studio"])
    predictor = TorchPredictor(OnnxTorchModule(model, (1, 3, size, size)), SESSION_SPECS[SESSION], torch.device("cpu"))
    x = predictor.preprocess(rgb)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(isnet_file), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        got = predictor.net(x).float().numpy()
    # onnxruntime runs this graph in fp16, torch in fp32: probabilities agree to fp16 rounding.
    assert np.abs(got - expected).max() < 2e-2
    assert iou(got > 0.5, expected > 0.5) >= 0.999


def test_torch_predictor_masks_match_rembgs_on_the_real_net(stage: BackgroundRemoval, isnet_file: Path) -> None:
    size = SESSION_SPECS[SESSION].size
    net = OnnxTorchModule(onnx.load(str(isnet_file)), (1, 3, size, size))
    predictor = TorchPredictor(net, SESSION_SPECS[SESSION], torch.device("cpu"))
    rgb = composite(cutout("flamingo.png"), backdrops(256, 256)["studio"])  # thin legs: edges matter
    assert iou(predictor(rgb) >= 128, stage.predictor(rgb) >= 128) >= 0.98


def test_random_isnet_has_the_real_architecture(isnet_file: Path) -> None:
    real = onnx.load(str(isnet_file), load_external_data=False)
    random = build_rsu_net(SESSION, SESSION_SPECS[SESSION].size)

    def convolutions(model: onnx.ModelProto) -> list[str]:
        shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
        layers = []
        for node in model.graph.node:
            if node.op_type == "Conv":
                attrs = {a.name: tuple(a.ints) for a in node.attribute if a.ints}
                layers.append(f"{shapes[node.input[1]]} {sorted(attrs.items())}")
        return sorted(layers)

    def parameters(model: onnx.ModelProto) -> int:
        return sum(int(np.prod(init.dims)) for init in model.graph.initializer if init.data_type != onnx.TensorProto.INT64)

    assert convolutions(random) == convolutions(real)
    assert parameters(random) == parameters(real)
