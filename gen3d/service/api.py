"""The HTTP contract, free of any web framework: request models, limits and their checks.

The ingress reads bytes off the wire and hands them here; every rejection is an ``InputError``
that names the field. What comes out is a typed ``Job`` that the stages trust: they never check
a request field again.
"""

from dataclasses import dataclass, replace
from typing import get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gen3d.config import TextToImageConfig
from gen3d.errors import InputError
from gen3d.formats import (
    FACES_RANGE,
    FORMATS,
    RESOLUTION_RANGE,
    TEXTURE_SIZES,
    MeshOptions,
    OutputFormat,
    TextureMode,
    UpAxis,
    auto_resolution,
)
from gen3d.imaging import decode_base64_image, decode_image, mib

OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MAX_SEED = 2**32 - 1
MESH_FIELDS = ("faces", "texture", "texture_size", "resolution", "normalize")


class ServiceConfig(BaseModel):
    """Limits and access settings of the HTTP entry (the ingress's ``user_config``).

    Changing them reconfigures the ingress in place: no model replica restarts.

    Attributes:
        api_key: when set, every API route needs header ``X-API-Key`` with this value; the
            studio's page and files, ``/docs``, ``/openapi.json`` and ``/health`` stay public
            (``/admin/drain`` takes the admin token instead).
        max_upload_bytes: cap on an uploaded image (base64 text or multipart file).
        max_image_pixels: cap on width*height of an uploaded image, checked before decoding.
        min_image_side: smaller images are refused (a 1x1 image carries no object).
        request_timeout_s: a ``/generate`` request still running after this answers 504.
        job_timeout_s: a job still running after this fails with a timeout.
        max_in_flight: requests and running jobs admitted at once per ingress replica; beyond
            it ``/generate`` answers 503 + Retry-After and jobs wait as ``queued``.
        retry_after_s: the ``Retry-After`` value of 503s.
        drain_timeout_s: on shutdown, how long the ingress waits for work in flight to finish
            (new requests get 503 meanwhile).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    max_upload_bytes: int = Field(default=10 * 2**20, gt=0)
    max_image_pixels: int = Field(default=4096 * 4096, gt=0)
    min_image_side: int = Field(default=16, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    job_timeout_s: float = Field(default=600.0, gt=0)
    max_in_flight: int = Field(default=32, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    drain_timeout_s: float = Field(default=30.0, ge=0)


class GenerateRequest(BaseModel):
    """``POST /generate`` and ``POST /jobs`` JSON body: exactly one of ``prompt`` and ``image``.

    Fields left out take the preset's defaults (listed by ``GET /version``).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, description="Text prompt.")
    image: str | None = Field(
        default=None, description="Base64 (or a data: URL) PNG/JPEG/WebP image; skips text-to-image."
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED,
        description="Seeds FLUX for text prompts and the surface sampling of splats.",
    )
    steps: int | None = Field(default=None, description="Denoising steps (text prompts).")
    width: int | None = Field(default=None, description="Image width in pixels (text prompts).")
    height: int | None = Field(default=None, description="Image height in pixels (text prompts).")
    format: OutputFormat = Field(default="glb", description="glb, obj, ply (meshes) or splat (Gaussian-splat PLY).")
    up: UpAxis = Field(default="+y", description="Up axis of a splat; meshes are always +Y up.")
    faces: int | None = Field(
        default=None, ge=FACES_RANGE[0], le=FACES_RANGE[1], description="Target triangle count (meshes)."
    )
    texture: TextureMode | None = Field(
        default=None, description="vertex colours, or a baked uv texture atlas (glb, obj)."
    )
    texture_size: int | None = Field(
        default=None, description=f"Texture atlas side in texels, one of {list(TEXTURE_SIZES)} (uv)."
    )
    resolution: int | None = Field(
        default=None, ge=RESOLUTION_RANGE[0], le=RESOLUTION_RANGE[1],
        description="Marching-cubes grid points per axis (default: from faces, about 0.7 sqrt(faces)).",
    )
    normalize: bool | None = Field(
        default=None, description="Centre the mesh and scale its largest side to 1 (within ±0.5)."
    )

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
        seed: seeds text-to-image and the surface sampling of splats.
        steps, width, height: text-to-image settings (already checked against the preset).
        format: output format (a key of ``gen3d.formats.FORMATS``).
        up: splat up axis.
        mesh: mesh options for mesh formats, None for splats.
    """

    prompt: str | None
    image: np.ndarray | None
    seed: int
    steps: int
    width: int
    height: int
    format: OutputFormat
    up: UpAxis
    mesh: MeshOptions | None


@dataclass(frozen=True)
class JobDefaults:
    """What the preset says about requests: text-to-image settings and mesh option defaults."""

    text: TextToImageConfig
    mesh: MeshOptions


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


def mesh_options(req: GenerateRequest, defaults: MeshOptions) -> MeshOptions | None:
    """The request's mesh options over the preset's defaults; None for a splat.

    ``defaults.resolution`` is the preset's grid: the grid of a request that names none follows
    its face target (``auto_resolution``), up to that.

    Raises:
        InputError: mesh options on a splat, a texture mode the format cannot write, or a
            texture size outside ``TEXTURE_SIZES``.
    """
    given = {name: getattr(req, name) for name in MESH_FIELDS if getattr(req, name) is not None}
    fmt = FORMATS[req.format]
    if fmt.product != "mesh":
        if given:
            raise InputError(next(iter(given)), f"applies to mesh formats (glb, obj, ply), not {req.format}")
        return None
    options = replace(defaults, **given)
    if "resolution" not in given:
        options = replace(options, resolution=auto_resolution(options.faces, defaults.resolution))
    if not fmt.supports(options.texture):
        if "texture" in given:
            supported = [name for name, entry in FORMATS.items() if entry.supports(options.texture)]
            raise InputError("texture", f"{options.texture!r} is available for {supported}, not {req.format}")
        options = replace(options, texture="vertex")  # the preset's uv default: ply has vertex colours only
    if options.texture_size not in TEXTURE_SIZES:
        raise InputError("texture_size", f"expected one of {list(TEXTURE_SIZES)}, got {options.texture_size}")
    return options


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
        raise InputError(
            "image",
            f"is {mib(len(data))}, over the upload limit of {mib(service.max_upload_bytes)} "
            "(service setting max_upload_bytes)",
            status=413,
        )
    return decode_image(data, max_pixels=service.max_image_pixels, min_side=service.min_image_side)


def parse_form_seed(text: object) -> int:
    """A multipart form's ``seed`` field: a decimal integer in [0, 2**32 - 1]."""
    if not isinstance(text, str) or not text.strip().isdigit() or int(text) > MAX_SEED:
        raise InputError("seed", f"expected an integer in [0, {MAX_SEED}], got {text!r}")
    return int(text)


def job_from_request(req: GenerateRequest, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """Validate a ``POST /generate`` (or ``/jobs``) JSON request against the preset and limits."""
    steps, width, height = check_text_settings(defaults.text, req.steps, req.width, req.height)
    mesh = mesh_options(req, defaults.mesh)
    prompt = image = None
    if req.prompt is not None:
        prompt = check_prompt(req.prompt, defaults.text.max_prompt_chars)
    else:
        image = decode_base64_upload(req.image or "", service)
    return Job(prompt, image, req.seed, steps, width, height, req.format, req.up, mesh)


def splat_job(prompt: str | None, image: np.ndarray | None, seed: int, up: UpAxis, text: TextToImageConfig) -> Job:
    """A splat job with the preset's text-to-image defaults (the miners' protocols)."""
    steps, width, height = check_text_settings(text, None, None, None)
    return Job(prompt, image, seed, steps, width, height, "splat", up, None)


def job_from_form_prompt(prompt: str, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """three-gen's ``POST /generate/``: form ``prompt`` (text or base64 image) -> +Y splat."""
    if looks_like_base64_image(prompt):
        return splat_job(None, decode_base64_upload(prompt, service), 0, "+y", defaults.text)
    return splat_job(check_prompt(prompt, defaults.text.max_prompt_chars), None, 0, "+y", defaults.text)


def job_from_image_file(data: bytes, seed: int, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """404-gen's multipart ``POST /generate``: ``prompt_image_file`` + ``seed`` -> -Y splat."""
    return splat_job(None, decode_upload(data, service), seed, "-y", defaults.text)


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
