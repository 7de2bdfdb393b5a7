"""Tests for gen3d.stages.background: named rembg sessions, modes and devices, the tiny path, preprocessing.

Fixtures (tests/fixtures/, MIT, from the ``examples/`` folder of github.com/VAST-AI-Research/TripoSR,
downscaled to 256x256 to keep the repository small): ``teapot.png`` RGB with a grey background,
``chair.png`` RGBA with a transparent background.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError
from rembg.sessions.dis_general_use import DisSession
from rembg.sessions.u2net import U2netSession
from rembg.sessions.u2net_custom import U2netCustomSession

from gen3d.config import BackgroundConfig, load_preset
from gen3d.errors import InputError, WeightsUnavailableError
from gen3d.imaging import decode_image, prepare_conditioning_image
from gen3d.models.segmentation.mask_predictors import RembgPredictor
from gen3d.models.segmentation.tiny_onnx import tiny_model_filename
from gen3d.models.segmentation.u2net_onnx import random_model_filename
from gen3d.parts.checkpoints import CheckpointError
from gen3d.stages.background import BackgroundRemoval, custom_model_path, model_file
from tests.rembg_home import rembg_home_at

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GREY_U8 = round(0.5 * 255)


def fixture_pixels(name: str) -> np.ndarray:
    return decode_image((FIXTURES / name).read_bytes(), max_pixels=4096 * 4096)


@pytest.fixture(scope="module")
def rembg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private rembg model directory, so tests never touch ~/.rembg or download anything."""
    with rembg_home_at(tmp_path_factory.mktemp("rembg_home")) as home:
        yield home


@pytest.fixture(scope="module")
def stage(rembg_home: Path) -> BackgroundRemoval:
    return BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session="u2net_custom", threads=1))


def test_tiny_preset_uses_rembg_custom_session_with_written_model(stage: BackgroundRemoval, rembg_home: Path) -> None:
    assert isinstance(stage.predictor, RembgPredictor)
    session = stage.predictor.session
    assert isinstance(session, U2netCustomSession)
    model = rembg_home / "models" / "u2net_custom" / tiny_model_filename()
    assert model.is_file()
    assert session.inner_session.get_providers() == ["CPUExecutionProvider"]
    assert session.inner_session.get_session_options().intra_op_num_threads == 1
    assert stage.device == torch.device("cpu")


def test_teapot_background_is_removed_and_prepared(stage: BackgroundRemoval) -> None:
    teapot = fixture_pixels("teapot.png")
    assert teapot.shape == (256, 256, 3)
    rgba = stage.remove_background(teapot)
    alpha = rgba[:, :, 3]
    assert np.array_equal(rgba[:, :, :3], teapot)
    assert 0.15 < np.mean(alpha >= 128) < 0.6
    assert alpha[128, 128] == 255  # the teapot's body
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    assert border.max() == 0

    result = stage.process(teapot)
    assert result.removed_background
    out = result.image
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert (out[:8, :8] == GREY_U8).all() and (out[-8:, -8:] == GREY_U8).all()
    assert_centred_and_scaled(out)
    centre = out[256, 256].astype(int)
    assert centre[0] - centre[1] > 60  # a red teapot, not grey


def assert_centred_and_scaled(image: np.ndarray) -> None:
    """The visibly non-grey region is centred and its longer extent is just under 85 % of the side.

    Soft mask edges that fade into the grey make the visible extent slightly smaller than the
    alpha bounding box that the 85 % applies to, hence the one-sided tolerance.
    """
    visible = np.abs(image.astype(int) - GREY_U8).max(axis=2) > 8
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    assert 0.8 * 512 <= extent <= 0.85 * 512 + 2
    assert abs((rows[0] + rows[-1]) / 2 - 255.5) <= 6
    assert abs((cols[0] + cols[-1]) / 2 - 255.5) <= 6


def test_rgba_with_transparency_skips_removal(stage: BackgroundRemoval, monkeypatch: pytest.MonkeyPatch) -> None:
    chair = fixture_pixels("chair.png")
    assert chair.shape == (256, 256, 4)

    def fail(_: np.ndarray) -> np.ndarray:
        raise AssertionError("rembg must not run on an image that is already cut out")

    monkeypatch.setattr(stage, "remove_background", fail)
    result = stage.process(chair)
    assert not result.removed_background
    assert np.array_equal(result.image, prepare_conditioning_image(chair, 512, 0.85))


def test_opaque_rgba_goes_through_removal(stage: BackgroundRemoval) -> None:
    teapot = fixture_pixels("teapot.png")
    opaque = np.dstack([teapot, np.full(teapot.shape[:2], 255, np.uint8)])
    result = stage.process(opaque)
    assert result.removed_background
    assert np.array_equal(result.image, stage.process(teapot).image)


def test_fully_transparent_image_is_an_input_error(stage: BackgroundRemoval) -> None:
    with pytest.raises(InputError) as info:
        stage.process(np.zeros((64, 64, 4), np.uint8))
    assert info.value.field == "image" and info.value.status == 422


def test_speck_after_removal_is_no_foreground(stage: BackgroundRemoval) -> None:
    speck = np.full((256, 256, 3), 90, np.uint8)
    speck[100:102, 150:152] = (250, 20, 20)
    with pytest.raises(InputError, match="after background removal") as info:
        stage.process(speck)
    assert info.value.status == 422


def test_min_foreground_fraction_is_configurable(rembg_home: Path) -> None:
    dot = np.zeros((100, 100, 4), np.uint8)
    dot[40:43, 50:53] = 255  # 9 of 10,000 pixels
    strict = BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session="u2net_custom", threads=1))
    with pytest.raises(InputError, match="alpha channel"):
        strict.process(dot)
    lenient = BackgroundRemoval.from_config(
        BackgroundConfig(mode="tiny", session="u2net_custom", threads=1, min_foreground_fraction=0.0005, size=64)
    )
    assert lenient.process(dot).image.shape == (64, 64, 3)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 2), np.uint8)]
)
def test_malformed_arrays_are_input_errors(stage: BackgroundRemoval, bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="uint8"):
        stage.process(bad)


def test_session_must_be_named_explicitly(rembg_home: Path) -> None:
    with pytest.raises(ValidationError):
        BackgroundConfig(mode="tiny")
    with pytest.raises(ValueError, match="explicitly"):
        BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session=""))
    for refused in ("bogus", "atlascloud", "dis_custom"):  # unknown, uploads images, unsupported custom
        with pytest.raises(ValueError, match=refused):
            BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session=refused))


def test_custom_model_outside_rembg_home_is_refused(rembg_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="REMBG_HOME"):
        custom_model_path(BackgroundConfig(mode="tiny", session="u2net_custom", model_path=str(outside)))
    assert not outside.exists()


def test_real_custom_model_must_exist(rembg_home: Path) -> None:
    missing = rembg_home / "models" / "u2net_custom" / "missing.onnx"
    with pytest.raises(WeightsUnavailableError, match="missing.onnx"):
        BackgroundRemoval.from_config(BackgroundConfig(mode="real", session="u2net_custom", model_path=str(missing)))


def test_a_pinned_sha256_is_checked_on_a_file_already_in_place(rembg_home: Path) -> None:
    """rembg checks an md5 only when it downloads: a file copied in by hand meets the pin here."""
    model = rembg_home / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"not the release asset")
    cfg = BackgroundConfig(mode="real", session="isnet-general-use", device="cpu")
    with pytest.raises(CheckpointError, match="sha256 of .*isnet-general-use.onnx: expected 6092"):
        model_file(cfg.model_copy(update={"sha256": load_preset("fast").background.sha256}), DisSession)
    pinned = cfg.model_copy(update={"sha256": hashlib.sha256(model.read_bytes()).hexdigest()})
    assert model_file(pinned, DisSession) == model


def test_unreachable_download_names_model_and_command(rembg_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy on a closed local port makes any download fail at once, with or without network.
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(WeightsUnavailableError) as info:
        BackgroundRemoval.from_config(BackgroundConfig(mode="real", session="u2net"))
    message = str(info.value)
    assert "rembg d u2net" in message and "u2net.onnx" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_fails_at_startup(rembg_home: Path) -> None:
    with pytest.raises(ValueError, match="background.device.*CUDA is not available"):
        BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session="u2net_custom", device="cuda"))


@pytest.mark.parametrize("device", ["mps", "cuda:x"])
def test_unknown_device_fails_at_startup(rembg_home: Path, device: str) -> None:
    with pytest.raises(ValueError, match="device"):
        BackgroundRemoval.from_config(BackgroundConfig(mode="tiny", session="u2net_custom", device=device))


@pytest.mark.parametrize(
    ("mode", "session", "message"),
    [
        ("random", "u2net_custom", "full-size random architecture"),  # never the tiny net at full size
        ("random", "birefnet-general", "full-size random architecture"),
        ("tiny", "u2net", "mode tiny runs session 'u2net_custom'"),  # tiny never downloads real weights
    ],
)
def test_mode_without_a_model_fails_at_startup(rembg_home: Path, mode: str, session: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackgroundRemoval.from_config(BackgroundConfig(mode=mode, session=session, device="cpu"))


def test_random_mode_runs_the_full_size_net_in_rembgs_session(rembg_home: Path) -> None:
    stage = BackgroundRemoval.from_config(BackgroundConfig(mode="random", session="u2net", device="cpu", threads=2))
    session = stage.predictor.session
    assert isinstance(session, U2netSession)  # rembg's u2net pre- and post-processing
    model = rembg_home / "models" / "gen3d-random" / random_model_filename("u2net", 320)
    assert type(session).download_models() == str(model)
    assert not (rembg_home / "models" / "u2net" / "u2net.onnx").exists()  # the real model's place stays empty
    parameters = sum(int(np.prod(init.dims)) for init in onnx.load(str(model)).graph.initializer)
    assert parameters > 40_000_000  # U^2-Net has 44.0 M parameters; the tiny net has 151
    mask = stage.remove_background(fixture_pixels("teapot.png"))[:, :, 3]
    assert mask.shape == (256, 256) and mask.max() > mask.min()  # random weights: a mask, not an object


def test_real_rgba_fixture_is_centred_and_scaled(stage: BackgroundRemoval) -> None:
    ghost = fixture_pixels("ghost_rgba.png")  # soft alpha (254 inside) still counts as cut out
    result = stage.process(ghost)
    assert not result.removed_background
    assert_centred_and_scaled(result.image)


@pytest.mark.gpu
def test_cuda_stage_runs_the_full_size_graph_on_the_gpu(rembg_home: Path) -> None:
    cfg = BackgroundConfig(mode="random", session="isnet-general-use", device="cuda", gpu_memory_gib=4.0)
    stage = BackgroundRemoval.from_config(cfg)
    stage.warmup()
    assert stage.device.type == "cuda" and stage.predictor._forward.captured == 1
    teapot = fixture_pixels("teapot.png")
    on_gpu = stage.remove_background(teapot)[:, :, 3]
    assert stage.predictor._forward.captured == 1  # replayed, not captured again
    on_cpu = BackgroundRemoval.from_config(cfg.model_copy(update={"device": "cpu", "gpu_memory_gib": None}))
    reference = on_cpu.remove_background(teapot)[:, :, 3]
    # Same random graph: fp16 torch on the GPU against rembg's fp32 onnxruntime session.
    assert np.abs(on_gpu.astype(int) - reference).mean() < 8
