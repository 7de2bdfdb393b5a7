"""The request schemas and the edge agree: a body matches its schema exactly when the edge takes it.

What JSON Schema cannot say (an image that decodes, its smallest side) is the one exception: the
edge answers it 422 naming the field, as the schema's description says.
"""

import base64
import re

import pytest
from jsonschema import Draft202012Validator

from gen3d.config import load_preset
from gen3d.errors import InputError
from gen3d.imaging import BASE64_IMAGE_PATTERN, base64_payload
from gen3d.service.api import (
    PROMPT_PATTERN,
    GenerateRequest,
    JobDefaults,
    ServiceConfig,
    check_prompt,
    job_from_form_prompt,
    job_from_request,
    looks_like_base64_image,
)
from gen3d.service.request_schema import IMAGE_PROMPT_PATTERN, generate_request_schema, prompt_form_schema
from tests.conftest import FIXTURES

PRESET = load_preset("tiny")
DEFAULTS = JobDefaults(PRESET.text_to_image, PRESET.mesh_defaults(), PRESET.mesh_limits())
SERVICE = ServiceConfig()
REQUEST = Draft202012Validator(generate_request_schema(DEFAULTS, SERVICE))
FORM = Draft202012Validator(prompt_form_schema(DEFAULTS, SERVICE))
CHAIR = base64.b64encode((FIXTURES / "chair.png").read_bytes()).decode()


def edge_takes(body: dict) -> bool:
    try:
        job_from_request(GenerateRequest.model_validate(body), DEFAULTS, SERVICE)
    except (InputError, ValueError):
        return False
    return True


BODIES = [
    {"prompt": "a mug"},
    {"prompt": "a mug", "image": None},
    {"image": CHAIR, "prompt": None},
    {"image": f"data:image/png;base64,{CHAIR}\n", "format": "splat"},
    {"prompt": None, "image": None},  # the case: neither source
    {},
    {"prompt": "a mug", "image": CHAIR},
    {"image": "ü" + CHAIR},  # non-ASCII base64
    {"image": "data:text/plain;base64,aGk="},
    {"image": CHAIR + "=="},
    {"prompt": ""}, {"prompt": " \u3000\n"}, {"prompt": "a\x00b"}, {"prompt": "\x0ba"}, {"prompt": "x" * 1001},
    {"prompt": "x" * 1000}, {"prompt": "\U0001f600 emoji"}, {"prompt": "tab\tand\nlines"},
    {"prompt": "a", "seed": "5"}, {"prompt": "a", "seed": 5.0}, {"prompt": "a", "seed": True}, {"prompt": "a", "seed": 2**32},
    {"prompt": "a", "steps": 4}, {"prompt": "a", "steps": 5}, {"prompt": "a", "width": 64}, {"prompt": "a", "height": 512},
    {"prompt": "a", "format": "splat", "faces": 5000}, {"prompt": "a", "format": "splat", "faces": None},
    {"prompt": "a", "format": "splat", "up": "-y"}, {"prompt": "a", "format": "fbx"},
    {"prompt": "a", "format": "ply", "texture": "uv"}, {"prompt": "a", "format": "ply", "texture": "vertex"},
    {"prompt": "a", "format": "obj", "texture": "uv"}, {"prompt": "a", "texture_size": 512}, {"prompt": "a", "texture_size": 1024},
    {"prompt": "a", "resolution": 128}, {"prompt": "a", "resolution": 129}, {"prompt": "a", "resolution": 31},
    {"prompt": "a", "faces": 999}, {"prompt": "a", "faces": 500_000}, {"prompt": "a", "normalize": 1},
    {"prompt": "a", "colour": "red"},
]  # fmt: skip


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_a_json_body_matches_the_schema_exactly_when_the_edge_takes_it(body: dict) -> None:
    assert REQUEST.is_valid(body) == edge_takes(body)


QUALITY = load_preset("quality_tiny")
TRELLIS = JobDefaults(QUALITY.text_to_image, QUALITY.mesh_defaults(), QUALITY.mesh_limits(), QUALITY.shape_model())
TRELLIS_REQUEST = Draft202012Validator(generate_request_schema(TRELLIS, SERVICE))
FLOW_BODIES = [
    {"prompt": "a", "ss_steps": 1}, {"prompt": "a", "ss_steps": 4}, {"prompt": "a", "ss_steps": 5}, {"prompt": "a", "ss_steps": 0},
    {"prompt": "a", "slat_steps": 2.0}, {"prompt": "a", "slat_steps": "2"}, {"prompt": "a", "ss_cfg": 7.5},
    {"prompt": "a", "ss_cfg": 0}, {"prompt": "a", "slat_cfg": -1}, {"prompt": "a", "slat_cfg": 15.5},
    {"prompt": "a", "resolution": 64}, {"prompt": "a", "resolution": None}, {"prompt": "a", "format": "splat", "ss_steps": 2},
]  # fmt: skip


@pytest.mark.parametrize("body", FLOW_BODIES, ids=range(len(FLOW_BODIES)))
def test_trellis_options_match_the_schema_exactly_when_the_edge_takes_them(body: dict) -> None:
    try:
        job_from_request(GenerateRequest.model_validate(body), TRELLIS, SERVICE)
        taken = True
    except (InputError, ValueError):
        taken = False
    assert TRELLIS_REQUEST.is_valid(body) == taken
    # A TripoSR service takes none of them but null.
    assert REQUEST.is_valid(body) == edge_takes(body)


@pytest.mark.parametrize("image", ["", "AAAA", base64.b64encode(b"GIF89a not really").decode()])
def test_schema_valid_images_that_do_not_decode_are_422_naming_the_field(image: str) -> None:
    assert REQUEST.is_valid({"image": image})
    with pytest.raises(InputError) as info:
        job_from_request(GenerateRequest(image=image), DEFAULTS, SERVICE)
    assert (info.value.status, info.value.field) == (422, "image")


@pytest.mark.parametrize(
    "text",
    ["", "AA==", "AAA=", "AAAA", "A", "AAA", "AB==", "AA=A", "A===", "AAAA====", " AA==\n", "\u00a0AA==", "AA==AA==",
     "data:image/png;base64,AAAA", "data:image/png;a=b;base64,AA==", "data:image/ü;base64,AA==", "data:text/plain;base64,AA==",
     "data:image/png,AAAA", "data:image/png;base64,"],
)  # fmt: skip
def test_base64_syntax_is_what_the_pattern_says(text: str) -> None:
    try:
        base64_payload(text)
        taken = True
    except InputError:
        taken = False
    assert taken == (re.fullmatch(BASE64_IMAGE_PATTERN, text) is not None)


@pytest.mark.parametrize("prompt", ["a", " a ", "", "   ", "\u2003", "\x85", "\ufeff", "a\x1f", "\x1c", "é", "a\rb"])
def test_prompts_are_what_the_pattern_says(prompt: str) -> None:
    try:
        check_prompt(prompt, 1000)
        taken = True
    except InputError:
        taken = False
    assert taken == (re.fullmatch(PROMPT_PATTERN, prompt) is not None)


@pytest.mark.parametrize("prompt", ["a wooden chair", CHAIR, f"data:image/png;base64,{CHAIR}", "iVBORw0KGgo is a word", "/9j/"])
def test_three_gen_prompt_text_or_image_matches_its_schema(prompt: str) -> None:
    valid = FORM.is_valid({"prompt": prompt})
    try:
        job_from_form_prompt(prompt, DEFAULTS, SERVICE)
        taken = True
    except InputError as error:
        taken = False
        # Schema-valid, refused: only an image that does not decode, named as the form's field.
        assert not valid or (error.status, error.field) == (422, "prompt")
    assert valid == taken or (valid and looks_like_base64_image(prompt))
    assert (re.fullmatch(IMAGE_PROMPT_PATTERN, prompt) is not None) <= looks_like_base64_image(prompt)
