"""The HTTP contract's pure checks (gen3d.service.api), without a server."""

import base64
from dataclasses import replace

import pytest

from gen3d.config import load_preset
from gen3d.errors import InputError
from gen3d.formats import auto_resolution
from gen3d.service.api import (
    FORM_PROMPT_FIELDS,
    IMAGE_FILE_FIELDS,
    GenerateRequest,
    JobDefaults,
    ServiceConfig,
    check_form_fields,
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
    # The form's own field is named, and bytes no decoder reads are 422 (the request's type was right).
    assert (info.value.field, info.value.status) == ("prompt_image_file", 422)
    for text in ("-1", "1.5", "4294967296", "", " 42 ", "\u0664\u0662"):  # digits are ASCII only, as an integer's
        with pytest.raises(InputError, match="seed"):
            parse_form_seed(text)
    assert parse_form_seed("42") == 42


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


def test_the_preset_narrows_grid_and_atlas_sizes() -> None:
    limited = JobDefaults(TEXT, PRESET.mesh_defaults(), PRESET.mesh_limits())
    assert job_from_request(GenerateRequest(prompt="cube", resolution=128, texture_size=512), limited, SERVICE).mesh
    for field, value, match in (("resolution", 160, "at most 128 on this service"), ("texture_size", 1024, r"\[256, 512\]")):
        with pytest.raises(InputError, match=match) as info:
            job_from_request(GenerateRequest(prompt="cube", **{field: value}), limited, SERVICE)
        assert info.value.field == field


def test_integral_numbers_are_integers_but_strings_and_booleans_are_not() -> None:
    assert GenerateRequest.model_validate_json('{"prompt": "a", "seed": 7.0, "faces": 2e3}').faces == 2000
    for value in ('"7"', "true", "7.5"):
        with pytest.raises(ValueError, match="valid integer"):
            GenerateRequest.model_validate_json(f'{{"prompt": "a", "seed": {value}}}')


def test_form_fields_beyond_the_protocol_are_refused_by_name() -> None:
    check_form_fields(["prompt_image_file", "seed"], IMAGE_FILE_FIELDS)
    with pytest.raises(InputError, match="not a field of this form") as info:
        check_form_fields(["prompt", "seed"], FORM_PROMPT_FIELDS)
    assert (info.value.field, info.value.status) == ("seed", 422)


def test_a_three_gen_image_that_does_not_decode_names_the_prompt_field() -> None:
    with pytest.raises(InputError) as info:
        job_from_form_prompt("iVBORw0KGgoAAAA=", DEFAULTS, SERVICE)
    assert (info.value.field, info.value.status) == ("prompt", 422)


QUALITY = load_preset("quality_tiny")
TRELLIS = JobDefaults(QUALITY.text_to_image, QUALITY.mesh_defaults(), QUALITY.mesh_limits(), QUALITY.shape_model())


def test_trellis_sampler_options_reach_the_job_within_the_preset_ranges() -> None:
    job = job_from_request(GenerateRequest(prompt="cube", ss_steps=3, slat_cfg=0.0), TRELLIS, SERVICE)
    assert (job.flow.ss_steps, job.flow.slat_cfg, job.flow.slat_steps, job.flow.ss_cfg) == (3, 0.0, None, None)
    assert job_from_request(GenerateRequest(prompt="cube"), TRELLIS, SERVICE).flow.ss_steps is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ss_steps": 0}, "ss_steps"),
        ({"slat_steps": QUALITY.image_to_3d.trellis.max_steps + 1}, "slat_steps"),
        ({"ss_cfg": -0.5}, "ss_cfg"),
        ({"slat_cfg": QUALITY.image_to_3d.trellis.max_cfg + 1}, "slat_cfg"),
        ({"resolution": 64}, "resolution"),
    ],
)
def test_trellis_refuses_out_of_range_options_and_a_grid(fields: dict, field: str) -> None:
    with pytest.raises(InputError) as refused:
        job_from_request(GenerateRequest(prompt="cube", **fields), TRELLIS, SERVICE)
    assert refused.value.field == field


def test_triposr_refuses_trellis_options() -> None:
    with pytest.raises(InputError) as refused:
        job_from_request(GenerateRequest(prompt="cube", slat_steps=4), DEFAULTS, SERVICE)
    assert refused.value.field == "slat_steps" and "trellis" in str(refused.value)
