"""The HTTP contract, free of any web framework: request models, limits and their checks.

The ingress reads bytes off the wire and hands them here; every rejection is an ``InputError``
that names the field. What comes out is a typed ``Job`` that the stages trust: they never check
a request field again. The answers' models live beside it, in ``gen3d.service.answers``.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gen3d.config import ShapeModel, TextToImageConfig
from gen3d.errors import InputError
from gen3d.formats import (
    FACES_RANGE,
    FORMATS,
    RESOLUTION_RANGE,
    MeshLimits,
    MeshOptions,
    OutputFormat,
    TextureMode,
    UpAxis,
    auto_resolution,
)
from gen3d.imaging import BASE64_SPACE, decode_base64_image, decode_image, mib
from gen3d.stages.image_to_3d_base import FlowOptions

OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MAX_SEED = 2**32 - 1
MESH_FIELDS = ("faces", "texture", "texture_size", "resolution", "normalize")
#: TRELLIS's sampler options (the trellis model only).
FLOW_FIELDS = ("ss_steps", "ss_cfg", "slat_steps", "slat_cfg")
#: The fields of the miners' forms: 404-gen's multipart body and three-gen's form. Any other
#: field is refused, as an unknown JSON field is.
IMAGE_FILE_FIELDS = ("prompt_image_file", "seed")
FORM_PROMPT_FIELDS = ("prompt",)

_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f"
# What ``str.strip`` removes, less the control characters above (refused anyway).
_SPACE = r"\t\n\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A prompt the edge takes, as a JSON Schema ``pattern`` (ECMA-262 and Python agree on it): no
#: control character but tab and line breaks, and at least one character that is not whitespace.
PROMPT_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
#: How a three-gen form ``prompt`` that carries a base64 image starts (a data URL, or PNG, JPEG
#: or WebP magic in base64); any other prompt is text.
IMAGE_PROMPT_START = f"^[{BASE64_SPACE}]*(data:image|iVBORw0KGgo|/9j/|UklGR)"
_PROMPT = re.compile(PROMPT_PATTERN)
_CONTROL_CHAR = re.compile(f"[{_CONTROL}]")
_IMAGE_PROMPT = re.compile(IMAGE_PROMPT_START)


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

    Fields left out take the preset's defaults (listed by ``GET /version``). Strict: a value of
    another JSON type (``"5"`` for 5) is refused, as the OpenAPI document's types say.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

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
        default=None, description="Texture atlas side in texels (uv)."
    )
    resolution: int | None = Field(
        default=None, ge=RESOLUTION_RANGE[0], le=RESOLUTION_RANGE[1],
        description="Marching-cubes grid points per axis (default: from faces, about 0.7 sqrt(faces)).",
    )
    normalize: bool | None = Field(
        default=None, description="Centre the mesh and scale its largest side to 1 (within ±0.5)."
    )
    ss_steps: int | None = Field(default=None, description="TRELLIS: Euler steps of the sparse-structure flow.")
    ss_cfg: float | None = Field(default=None, description="TRELLIS: guidance strength of the sparse-structure flow.")
    slat_steps: int | None = Field(default=None, description="TRELLIS: Euler steps of the structured-latent flow.")
    slat_cfg: float | None = Field(default=None, description="TRELLIS: guidance strength of the structured-latent flow.")

    @field_validator("seed", "steps", "width", "height", "faces", "texture_size", "resolution", "ss_steps", "slat_steps",
                     mode="before")  # fmt: skip
    @classmethod
    def _integral(cls, value: object) -> object:
        # JSON Schema counts 5.0 (and 5e0) as an integer: take it as 5 (strict mode would refuse it).
        return int(value) if isinstance(value, float) and value.is_integer() else value

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
        flow: TRELLIS's sampler options (all None for TripoSR and for the preset's defaults).
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
    flow: FlowOptions = FlowOptions()


@dataclass(frozen=True)
class JobDefaults:
    """What the preset says about requests: text-to-image settings, mesh option defaults and limits,
    and the 3D model with its sampler's limits."""

    text: TextToImageConfig
    mesh: MeshOptions
    limits: MeshLimits = MeshLimits()
    shape: ShapeModel = ShapeModel()


# -- checks ----------------------------------------------------------------------------------------


def first_validation_error(error: ValidationError) -> InputError:
    """Turn pydantic's error list into one ``InputError`` naming the first bad field."""
    detail = error.errors()[0]
    field = ".".join(str(part) for part in detail["loc"]) or "body"
    return InputError(field, detail["msg"], status=422)


def check_prompt(prompt: str, max_chars: int) -> str:
    """The stripped prompt, once it has at most ``max_chars`` characters and matches ``PROMPT_PATTERN``.

    Raises:
        InputError: 422 naming ``prompt``: over-long, control characters, or only whitespace.
    """
    if len(prompt) > max_chars:
        raise InputError("prompt", f"expected at most {max_chars} characters, got {len(prompt)}")
    # Controls first: without them the pattern matches in one pass (no backtracking over them).
    if _CONTROL_CHAR.search(prompt):
        raise InputError("prompt", "expected printable text, got control characters")
    if _PROMPT.fullmatch(prompt) is None:
        raise InputError("prompt", "expected non-empty text, got an empty or whitespace-only prompt")
    return prompt.strip()


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


def mesh_options(req: GenerateRequest, defaults: MeshOptions, limits: MeshLimits) -> MeshOptions | None:
    """The request's mesh options over the preset's defaults; None for a splat.

    ``defaults.resolution`` is the preset's grid: the grid of a request that names none follows
    its face target (``auto_resolution``), up to that.

    Raises:
        InputError: mesh options on a splat, a texture mode the format cannot write, or a
            grid or texture size beyond ``limits`` (the preset's).
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
    if "resolution" in given and options.resolution > limits.max_resolution:
        wanted = options.resolution
        raise InputError("resolution", f"expected at most {limits.max_resolution} on this service, got {wanted}")
    if options.texture_size not in limits.texture_sizes:
        raise InputError("texture_size", f"expected one of {list(limits.texture_sizes)}, got {options.texture_size}")
    return options


def flow_options(req: GenerateRequest, shape: ShapeModel) -> FlowOptions:
    """TRELLIS's sampler options of a request, in the preset's ranges.

    Raises:
        InputError: a sampler option for TripoSR, a ``resolution`` for TRELLIS (its grid is fixed
            at 256^3), or a value out of range.
    """
    given = {name: getattr(req, name) for name in FLOW_FIELDS if getattr(req, name) is not None}
    if shape.name != "trellis":
        if given:
            raise InputError(next(iter(given)), f"applies to the trellis model; this service runs {shape.name}")
        return FlowOptions()
    if req.resolution is not None:
        raise InputError("resolution", "TRELLIS's mesh grid is fixed (256^3): leave resolution out")
    for name in ("ss_steps", "slat_steps"):
        if name in given and not 1 <= given[name] <= shape.max_steps:
            raise InputError(name, f"expected 1 to {shape.max_steps}, got {given[name]}")
    for name in ("ss_cfg", "slat_cfg"):
        if name in given and not 0.0 <= given[name] <= shape.max_cfg:
            raise InputError(name, f"expected 0 to {shape.max_cfg}, got {given[name]}")
    return FlowOptions(**given)


def as_field_error(error: InputError, field: str) -> InputError:
    """A decoding refusal aimed at the request field that carried the image.

    Bytes that no decoder reads answer 422, not 415: the request's own media type was right, the
    field's content is not.
    """
    return InputError(field, error.message, 422 if error.status == 415 else error.status)


def decode_base64_upload(text: str, service: ServiceConfig, field: str = "image") -> np.ndarray:
    """Strict base64 (or a ``data:`` URL) image under the service's size and pixel limits."""
    try:
        return decode_base64_image(
            text, max_bytes=service.max_upload_bytes, max_pixels=service.max_image_pixels, min_side=service.min_image_side
        )
    except InputError as error:
        raise as_field_error(error, field) from None


def looks_like_base64_image(text: str) -> bool:
    """Tell three-gen's base64 image prompts from text prompts (``IMAGE_PROMPT_START``)."""
    return _IMAGE_PROMPT.match(text) is not None


def decode_upload(data: bytes, service: ServiceConfig, field: str = "image") -> np.ndarray:
    """Decode uploaded image bytes under the service's size and pixel limits."""
    if len(data) > service.max_upload_bytes:
        raise InputError(
            field,
            f"is {mib(len(data))}, over the upload limit of {mib(service.max_upload_bytes)} "
            "(service setting max_upload_bytes)",
            status=413,
        )
    try:
        return decode_image(data, max_pixels=service.max_image_pixels, min_side=service.min_image_side)
    except InputError as error:
        raise as_field_error(error, field) from None


def parse_form_seed(text: object) -> int:
    """A multipart form's ``seed`` field: decimal ASCII digits, an integer in [0, 2**32 - 1]."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or int(text) > MAX_SEED:
        raise InputError("seed", f"expected an integer in [0, {MAX_SEED}], got {text!r}")
    return int(text)


def check_form_fields(names: Iterable[str], allowed: tuple[str, ...]) -> None:
    """Refuse a form field the protocol does not have (422 naming it), as extra JSON fields are."""
    for name in names:
        if name not in allowed:
            raise InputError(name, f"is not a field of this form; expected only {list(allowed)}")


def job_from_request(req: GenerateRequest, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """Validate a ``POST /generate`` (or ``/jobs``) JSON request against the preset and limits."""
    steps, width, height = check_text_settings(defaults.text, req.steps, req.width, req.height)
    flow = flow_options(req, defaults.shape)
    mesh = mesh_options(req, defaults.mesh, defaults.limits)
    prompt = image = None
    if req.prompt is not None:
        prompt = check_prompt(req.prompt, defaults.text.max_prompt_chars)
    else:
        image = decode_base64_upload(req.image or "", service)
    return Job(prompt, image, req.seed, steps, width, height, req.format, req.up, mesh, flow)


def splat_job(prompt: str | None, image: np.ndarray | None, seed: int, up: UpAxis, text: TextToImageConfig) -> Job:
    """A splat job with the preset's text-to-image defaults (the miners' protocols)."""
    steps, width, height = check_text_settings(text, None, None, None)
    return Job(prompt, image, seed, steps, width, height, "splat", up, None)


def job_from_form_prompt(prompt: str, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """three-gen's ``POST /generate/``: form ``prompt`` (text or base64 image) -> +Y splat."""
    if looks_like_base64_image(prompt):
        return splat_job(None, decode_base64_upload(prompt, service, "prompt"), 0, "+y", defaults.text)
    return splat_job(check_prompt(prompt, defaults.text.max_prompt_chars), None, 0, "+y", defaults.text)


def job_from_image_file(data: bytes, seed: int, defaults: JobDefaults, service: ServiceConfig) -> Job:
    """404-gen's multipart ``POST /generate``: ``prompt_image_file`` + ``seed`` -> -Y splat."""
    return splat_job(None, decode_upload(data, service, "prompt_image_file"), seed, "-y", defaults.text)


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
