"""The HTTP contract's pure checks (gen3d.service.api), without a server."""

import base64
from dataclasses import replace

import pytest

from gen3d.config import load_preset
from gen3d.errors import InputError
from gen3d.formats import auto_resolution
from gen3d.service.api import (
    GenerateRequest,
    JobDefaults,
    ServiceConfig,
    check_prompt,
    job_from_form_prompt,
    job_from_image_file,
    job_from_request,
    looks_like_base64_image,
    parse_form_seed,
    parse_server_timing,
    server_timing,
)
from tests.conftest import FIXTURES

PRESET = load_preset("tiny")
TEXT = PRESET.text_to_image
DEFAULTS = JobDefaults(TEXT, PRESET.mesh_defaults())
SERVICE = ServiceConfig()


def png_b64(name: str = "chair.png") -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode("ascii")


def test_prompt_is_stripped_and_defaults_come_from_the_preset() -> None:
    job = job_from_request(GenerateRequest(prompt="  a blue cube "), DEFAULTS, SERVICE)
    assert job.prompt == "a blue cube"
    assert (job.steps, job.width, job.height) == (TEXT.steps, TEXT.width, TEXT.height)
    assert job.format == "glb" and job.image is None
    defaults = PRESET.mesh_defaults()
    assert job.mesh == replace(defaults, resolution=auto_resolution(defaults.faces, defaults.resolution))


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
        job_from_request(GenerateRequest(prompt="cube", **{field: value}), DEFAULTS, SERVICE)
    assert info.value.field == field


def test_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValueError, match="exactly one"):
        GenerateRequest(prompt="a", image="b")


def test_base64_image_is_decoded() -> None:
    job = job_from_request(GenerateRequest(image=png_b64()), DEFAULTS, SERVICE)
    assert job.prompt is None and job.image.ndim == 3 and job.image.shape[2] in (3, 4)


def test_data_url_is_accepted() -> None:
    job = job_from_request(GenerateRequest(image="data:image/png;base64," + png_b64()), DEFAULTS, SERVICE)
    assert job.image is not None


def test_not_base64_and_oversize() -> None:
    with pytest.raises(InputError, match="base64") as info:
        job_from_request(GenerateRequest(image="%%% not base64 %%%"), DEFAULTS, SERVICE)
    assert info.value.status == 400
    small = ServiceConfig(max_upload_bytes=1000)
    with pytest.raises(InputError, match="over the upload limit of 0.0 MiB .service setting max_upload_bytes") as info:
        job_from_request(GenerateRequest(image=png_b64()), DEFAULTS, small)
    assert info.value.status == 413


def test_three_gen_form_prompt_text_or_image() -> None:
    text = job_from_form_prompt("a wooden chair", DEFAULTS, SERVICE)
    assert (text.prompt, text.format, text.up) == ("a wooden chair", "splat", "+y")
    image = job_from_form_prompt(png_b64("ghost_rgba.png"), DEFAULTS, SERVICE)
    assert image.prompt is None and image.image is not None and image.up == "+y"


def test_404gen_image_file_is_a_minus_y_splat() -> None:
    job = job_from_image_file((FIXTURES / "teapot.png").read_bytes(), 5, DEFAULTS, SERVICE)
    assert (job.format, job.up, job.seed) == ("splat", "-y", 5)
    with pytest.raises(InputError) as info:
        job_from_image_file(b"not an image", 0, DEFAULTS, SERVICE)
    assert info.value.field == "image"
    for text in ("-1", "1.5", "4294967296", ""):
        with pytest.raises(InputError, match="seed"):
            parse_form_seed(text)
    assert parse_form_seed(" 42 ") == 42


def test_base64_detection_does_not_take_text_for_images() -> None:
    assert looks_like_base64_image(png_b64())
    assert not looks_like_base64_image("a photo of a dog")


def test_server_timing_round_trips_through_the_client_parser() -> None:
    timings = {"text_to_image": 0.1234, "export": 0.005, "total": 0.2}
    parsed = parse_server_timing(server_timing(timings))
    assert parsed == pytest.approx(timings, abs=1e-4)


def test_mesh_options_take_the_request_over_the_preset() -> None:
    job = job_from_request(GenerateRequest(prompt="cube", faces=5000, texture="vertex", normalize=False), DEFAULTS, SERVICE)
    assert (job.mesh.faces, job.mesh.texture, job.mesh.normalize) == (5000, "vertex", False)
    assert job.mesh.resolution == min(96, PRESET.image_to_3d.mc_resolution)  # the grid follows faces


@pytest.mark.parametrize(("faces", "cap", "grid"), [(10_000, 256, 96), (20_000, 256, 128), (30_000, 256, 128),
                                                    (50_000, 256, 160), (500_000, 256, 256), (20_000, 48, 48)])  # fmt: skip
def test_auto_resolution_follows_the_face_target_up_to_the_preset(faces: int, cap: int, grid: int) -> None:
    assert auto_resolution(faces, cap) == grid
    job = job_from_request(GenerateRequest(prompt="cube", faces=faces), JobDefaults(TEXT, replace(PRESET.mesh_defaults(), resolution=cap)), SERVICE)
    assert job.mesh.resolution == grid
    named = job_from_request(GenerateRequest(prompt="cube", faces=faces, resolution=64), DEFAULTS, SERVICE)
    assert named.mesh.resolution == 64


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"format": "splat", "faces": 5000}, "faces", "applies to mesh formats"),
        ({"format": "ply", "texture": "uv"}, "texture", "available for"),
        ({"texture_size": 300}, "texture_size", "expected one of"),
    ],
)
def test_mesh_options_the_format_cannot_use_are_refused(body: dict, field: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        job_from_request(GenerateRequest(prompt="cube", **body), DEFAULTS, SERVICE)
    assert info.value.field == field


def test_ply_takes_vertex_colours_when_the_preset_default_is_uv() -> None:
    defaults = JobDefaults(TEXT, replace(PRESET.mesh_defaults(), texture="uv"))
    job = job_from_request(GenerateRequest(prompt="cube", format="ply"), defaults, SERVICE)
    assert job.mesh.texture == "vertex"


def test_ranges_are_in_the_request_schema() -> None:
    schema = GenerateRequest.model_json_schema()["properties"]
    faces = schema["faces"]["anyOf"][0]
    assert (faces["minimum"], faces["maximum"]) == (1000, 500000)
    assert schema["resolution"]["anyOf"][0]["maximum"] == 512
