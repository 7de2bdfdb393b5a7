"""The HTTP contract's pure checks (gen3d.api), without a server."""

import base64

import pytest

from gen3d.api import (
    GenerateRequest,
    ServiceConfig,
    check_prompt,
    job_from_form_prompt,
    job_from_image_file,
    job_from_request,
    looks_like_base64_image,
    parse_server_timing,
    server_timing,
)
from gen3d.config import load_preset
from gen3d.errors import InputError
from tests.conftest import FIXTURES

TEXT = load_preset("tiny").text_to_image
SERVICE = ServiceConfig()


def png_b64(name: str = "chair.png") -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode("ascii")


def test_prompt_is_stripped_and_defaults_come_from_the_preset() -> None:
    job = job_from_request(GenerateRequest(prompt="  a blue cube "), TEXT, SERVICE)
    assert job.prompt == "a blue cube"
    assert (job.steps, job.width, job.height) == (TEXT.steps, TEXT.width, TEXT.height)
    assert job.format == "glb" and job.image is None


@pytest.mark.parametrize(
    ("prompt", "match"), [("", "empty"), ("   \n", "empty"), ("x" * 5000, "at most"), ("a\x00b", "control")]
)
def test_bad_prompts(prompt: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        check_prompt(prompt, TEXT.max_prompt_chars)
    assert info.value.field == "prompt"


@pytest.mark.parametrize(("field", "value"), [("steps", 50), ("width", 4096), ("height", 7)])
def test_settings_outside_the_allowed_values(field: str, value: int) -> None:
    with pytest.raises(InputError, match="expected one of") as info:
        job_from_request(GenerateRequest(prompt="cube", **{field: value}), TEXT, SERVICE)
    assert info.value.field == field


def test_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValueError, match="exactly one"):
        GenerateRequest(prompt="a", image="b")


def test_base64_image_is_decoded() -> None:
    job = job_from_request(GenerateRequest(image=png_b64()), TEXT, SERVICE)
    assert job.prompt is None and job.image.ndim == 3 and job.image.shape[2] in (3, 4)


def test_data_url_is_accepted() -> None:
    job = job_from_request(GenerateRequest(image="data:image/png;base64," + png_b64()), TEXT, SERVICE)
    assert job.image is not None


def test_not_base64_and_oversize() -> None:
    with pytest.raises(InputError, match="base64") as info:
        job_from_request(GenerateRequest(image="%%% not base64 %%%"), TEXT, SERVICE)
    assert info.value.status == 400
    small = ServiceConfig(max_upload_bytes=1000)
    with pytest.raises(InputError, match="at most 1000 bytes") as info:
        job_from_request(GenerateRequest(image=png_b64()), TEXT, small)
    assert info.value.status == 413


def test_three_gen_form_prompt_text_or_image() -> None:
    text = job_from_form_prompt("a wooden chair", TEXT, SERVICE)
    assert (text.prompt, text.format, text.up) == ("a wooden chair", "splat", "+y")
    image = job_from_form_prompt(png_b64("ghost_rgba.png"), TEXT, SERVICE)
    assert image.prompt is None and image.image is not None and image.up == "+y"


def test_404gen_image_file_is_a_minus_y_splat() -> None:
    job = job_from_image_file((FIXTURES / "teapot.png").read_bytes(), 5, TEXT, SERVICE)
    assert (job.format, job.up, job.seed) == ("splat", "-y", 5)
    with pytest.raises(InputError) as info:
        job_from_image_file(b"not an image", 0, TEXT, SERVICE)
    assert info.value.field == "image"
    with pytest.raises(InputError, match="seed"):
        job_from_image_file((FIXTURES / "teapot.png").read_bytes(), -1, TEXT, SERVICE)


def test_base64_detection_does_not_take_text_for_images() -> None:
    assert looks_like_base64_image(png_b64())
    assert not looks_like_base64_image("a photo of a dog")


def test_server_timing_round_trips_through_the_client_parser() -> None:
    timings = {"text_to_image": 0.1234, "export": 0.005, "total": 0.2}
    parsed = parse_server_timing(server_timing(timings))
    assert parsed == pytest.approx(timings, abs=1e-4)
