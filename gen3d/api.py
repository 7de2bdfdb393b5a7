"""The HTTP contract, free of any web framework: request models, limits and their checks.

The ingress (``deployments/ingress.py``) reads bytes off the wire and hands them here; every
rejection is an ``InputError`` that names the field, so the wire format stays out of model code.
"""

from dataclasses import dataclass
from typing import get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gen3d.config import OutputFormat, TextToImageConfig, UpAxis
from gen3d.errors import InputError
from gen3d.imaging import decode_base64_image, decode_image

OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MAX_SEED = 2**32 - 1


class ServiceConfig(BaseModel):
    """Limits and access settings of the HTTP entry.

    Attributes:
        api_key: when set, every route but ``/health`` needs header ``X-API-Key`` with this value.
        max_upload_bytes: cap on a request body (base64 text or multipart file).
        max_image_pixels: cap on width*height of an uploaded image, checked before decoding.
        min_image_side: smaller images are refused (a 1x1 image carries no object).
        request_timeout_s: a request still running after this answers 504 and frees its slot.
        max_in_flight: requests admitted at once; beyond it the ingress answers 503 + Retry-After.
        retry_after_s: the ``Retry-After`` value of those 503s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    max_upload_bytes: int = Field(default=10 * 2**20, gt=0)
    max_image_pixels: int = Field(default=4096 * 4096, gt=0)
    min_image_side: int = Field(default=16, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    max_in_flight: int = Field(default=32, gt=0)
    retry_after_s: int = Field(default=2, ge=1)


class GenerateRequest(BaseModel):
    """``POST /generate`` JSON body: exactly one of ``prompt`` and ``image``.

    Attributes:
        prompt: text prompt.
        image: base64 (or ``data:`` URL) PNG/JPEG/WebP; skips text-to-image.
        seed: generator seed, 0..2**32-1.
        steps: denoising steps (None: the preset's default).
        width: image width for text prompts (None: the preset's default).
        height: image height for text prompts (None: the preset's default).
        format: ``glb`` (default), ``obj``, ``ply`` (meshes) or ``splat`` (Gaussian-splat PLY).
        up: up axis of a splat: ``+y`` (three-gen validators) or ``-y`` (404-gen / 3DGS viewers).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    image: str | None = None
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    format: OutputFormat = "glb"
    up: UpAxis = "+y"

    @model_validator(mode="after")
    def _one_source(self) -> "GenerateRequest":
        if (self.prompt is None) == (self.image is None):
            raise ValueError("give exactly one of 'prompt' (text) and 'image' (base64)")
        return self


@dataclass(frozen=True)
class Job:
    """A validated request, ready for the graph.

    Attributes:
        prompt: text prompt, or None for an image job.
        image: (H, W, 3|4) uint8 for an image job, else None.
        seed, steps, width, height: text-to-image settings (already checked against the preset).
        format: output format.
        up: splat up axis.
    """

    prompt: str | None
    image: np.ndarray | None
    seed: int
    steps: int
    width: int
    height: int
    format: OutputFormat
    up: UpAxis


def first_validation_error(error: ValidationError) -> InputError:
    """Turn pydantic's error list into one ``InputError`` naming the first bad field."""
    detail = error.errors()[0]
    field = ".".join(str(part) for part in detail["loc"]) or "body"
    return InputError(field, detail["msg"], status=422)


def check_prompt(prompt: str, max_chars: int) -> str:
    """Return the stripped prompt, or raise for empty / over-long / control-character text."""
    text = prompt.strip()
    if not text:
        raise InputError("prompt", "expected non-empty text, got an empty or whitespace-only prompt")
    if len(text) > max_chars:
        raise InputError("prompt", f"expected at most {max_chars} characters, got {len(text)}")
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
        raise InputError("prompt", "expected printable text, got control characters")
    return text


def check_text_settings(
    cfg: TextToImageConfig, steps: int | None, width: int | None, height: int | None
) -> tuple[int, int, int]:
    """Fill defaults from the preset and check steps/size against its allowed values."""
    steps = cfg.steps if steps is None else steps
    width = cfg.width if width is None else width
    height = cfg.height if height is None else height
    if steps not in cfg.allowed_steps:
        raise InputError("steps", f"expected one of {cfg.allowed_steps}, got {steps}")
    for name, value in (("width", width), ("height", height)):
        if value not in cfg.allowed_sizes:
            raise InputError(name, f"expected one of {cfg.allowed_sizes} pixels, got {value}")
    return steps, width, height


def check_seed(seed: int) -> int:
    """Seeds are 32-bit unsigned, as generators on every device accept them."""
    if not 0 <= seed <= MAX_SEED:
        raise InputError("seed", f"expected an integer in [0, {MAX_SEED}], got {seed}")
    return seed


def decode_base64_upload(text: str, service: ServiceConfig) -> np.ndarray:
    """Strict base64 (or a ``data:`` URL) image under the service's size and pixel limits."""
    return decode_base64_image(
        text, max_bytes=service.max_upload_bytes, max_pixels=service.max_image_pixels, min_side=service.min_image_side
    )


def looks_like_base64_image(text: str) -> bool:
    """Tell three-gen's base64 image prompts from text prompts (a data URL or PNG/JPEG/WebP magic)."""
    head = text.lstrip()[:16]
    return head.startswith(("data:image", "iVBORw0KGgo", "/9j/", "UklGR"))


def decode_upload(data: bytes, service: ServiceConfig) -> np.ndarray:
    """Decode uploaded image bytes under the service's size and pixel limits."""
    if len(data) > service.max_upload_bytes:
        raise InputError("image", f"is larger than the {service.max_upload_bytes}-byte upload limit", status=413)
    return decode_image(data, max_pixels=service.max_image_pixels, min_side=service.min_image_side)


def job_from_request(req: GenerateRequest, text_cfg: TextToImageConfig, service: ServiceConfig) -> Job:
    """Validate a ``POST /generate`` JSON request against the preset and limits."""
    steps, width, height = check_text_settings(text_cfg, req.steps, req.width, req.height)
    prompt = image = None
    if req.prompt is not None:
        prompt = check_prompt(req.prompt, text_cfg.max_prompt_chars)
    else:
        image = decode_base64_upload(req.image or "", service)
    return Job(prompt, image, check_seed(req.seed), steps, width, height, req.format, req.up)


def job_from_form_prompt(prompt: str, text_cfg: TextToImageConfig, service: ServiceConfig) -> Job:
    """three-gen's ``POST /generate/``: form ``prompt`` (text or base64 image) -> +Y splat."""
    steps, width, height = check_text_settings(text_cfg, None, None, None)
    if looks_like_base64_image(prompt):
        image = decode_base64_upload(prompt, service)
        return Job(None, image, 0, steps, width, height, "splat", "+y")
    return Job(check_prompt(prompt, text_cfg.max_prompt_chars), None, 0, steps, width, height, "splat", "+y")


def job_from_image_file(data: bytes, seed: int, text_cfg: TextToImageConfig, service: ServiceConfig) -> Job:
    """404-gen's multipart ``POST /generate``: ``prompt_image_file`` + ``seed`` -> -Y splat."""
    steps, width, height = check_text_settings(text_cfg, None, None, None)
    image = decode_upload(data, service)
    return Job(None, image, check_seed(seed), steps, width, height, "splat", "-y")


def server_timing(timings: dict[str, float]) -> str:
    """Format stage seconds as a ``Server-Timing`` header (durations in milliseconds)."""
    return ", ".join(f"{name};dur={seconds * 1000.0:.1f}" for name, seconds in timings.items())


def parse_server_timing(header: str) -> dict[str, float]:
    """``a;dur=12.5, b;dur=3`` -> {"a": 0.0125, "b": 0.003} (seconds)."""
    timings = {}
    for entry in filter(None, (part.strip() for part in header.split(","))):
        name, _, rest = entry.partition(";")
        if rest.startswith("dur="):
            timings[name] = float(rest[4:]) / 1000.0
    return timings
