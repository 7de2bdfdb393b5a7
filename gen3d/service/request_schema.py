"""What requests may ask of the running configuration: each body's JSON Schema, and the mesh
option ranges ``GET /version`` lists.

The edge (``gen3d.service.api``) and these schemas state one rule set: a body matches its schema
exactly when the edge takes it, except for what JSON Schema cannot say (that an image decodes,
its smallest side, that it shows an object), which each description states and which the edge
answers 422 naming the field. Enums and ranges come from the preset (``JobDefaults``) and the
size limits from the service settings (``ServiceConfig``), so the OpenAPI document says what
this service does, not what some other configuration would.
"""

from typing import Any

from gen3d.formats import FACES_RANGE, FORMATS, RESOLUTION_RANGE, auto_resolution
from gen3d.imaging import (
    ALLOWED_FORMATS,
    BASE64_BODY,
    BASE64_IMAGE_PATTERN,
    BASE64_SPACE,
    DATA_URL_PREFIX,
    mib,
)
from gen3d.service.api import (
    FLOW_FIELDS,
    IMAGE_PROMPT_START,
    MAX_SEED,
    MESH_FIELDS,
    PROMPT_PATTERN,
    GenerateRequest,
    JobDefaults,
    ServiceConfig,
)

#: A three-gen prompt that carries an image: base64 that starts like a PNG, JPEG or WebP file
#: (whole base64 quanta of their magic), or a data URL; a subset of ``BASE64_IMAGE_PATTERN``.
IMAGE_PROMPT_PATTERN = (
    f"^[{BASE64_SPACE}]*({DATA_URL_PREFIX}|iVBORw0KGgo[A-Za-z0-9+/]|/9j/|UklGR[A-Za-z0-9+/]{{3}})"
    f"{BASE64_BODY}[{BASE64_SPACE}]*$"
)
TEXT_EXAMPLE = {"prompt": "a blue ceramic mug", "seed": 0}


def nullable(schema: dict[str, Any], description: str, **annotations: Any) -> dict[str, Any]:
    """``schema`` or JSON null (a field left to the preset), with its description and annotations."""
    return {"anyOf": [schema, {"type": "null"}], "description": description, **annotations}


def image_rules(service: ServiceConfig) -> str:
    """The rules of an uploaded image that JSON Schema cannot state, with this service's limits."""
    return (
        f"A {'/'.join(ALLOWED_FORMATS)} file of at most {mib(service.max_upload_bytes)} (413 beyond) and "
        f"{service.max_image_pixels} pixels (413 beyond), each side at least {service.min_image_side} px. It must "
        "decode, and background removal must find an object in it: otherwise 422 naming this field."
    )


def base64_image_description(service: ServiceConfig) -> str:
    return f"Standard padded base64, or a data:image/<type>;base64, URL. {image_rules(service)}"


def prompt_text(max_chars: int) -> dict[str, Any]:
    """A text prompt: printable, not only whitespace, at most ``max_chars`` characters."""
    return {"type": "string", "maxLength": max_chars, "pattern": PROMPT_PATTERN}


def format_branches(defaults: JobDefaults) -> list[dict[str, Any]]:
    """One branch per output format: the texture modes it writes; no mesh option on a splat.

    The default format's branch holds when ``format`` is left out.
    """
    default_format = GenerateRequest.model_fields["format"].default
    branches = []
    for name, fmt in FORMATS.items():
        if fmt.product == "mesh":
            title = f"{name}: texture {' or '.join(fmt.files)}"
            properties = {"texture": {"enum": [*fmt.files, None]}}
        else:
            title = f"{name}: no mesh option"
            properties = {option: {"type": "null"} for option in MESH_FIELDS}
        branch: dict[str, Any] = {"title": title, "properties": {"format": {"const": name}, **properties}}
        if name != default_format:
            branch["required"] = ["format"]
        branches.append(branch)
    return branches


def generate_request_schema(defaults: JobDefaults, service: ServiceConfig) -> dict[str, Any]:
    """``POST /generate`` and ``POST /jobs`` JSON body as this service checks it."""
    schema = GenerateRequest.model_json_schema()
    properties = schema["properties"]

    def described(name: str) -> str:
        return properties[name]["description"]

    text, mesh, limits = defaults.text, defaults.mesh, defaults.limits
    properties["prompt"] = nullable(prompt_text(text.max_prompt_chars), described("prompt"))
    properties["image"] = nullable(
        {"type": "string", "pattern": BASE64_IMAGE_PATTERN},
        f"{described('image')} {base64_image_description(service)}",
    )
    properties["steps"] = nullable(
        {"type": "integer", "enum": text.allowed_steps}, described("steps"), default=text.steps
    )
    for side in ("width", "height"):
        properties[side] = nullable(
            {"type": "integer", "enum": text.allowed_sizes}, described(side), default=getattr(text, side)
        )
    properties["faces"] = nullable(
        {"type": "integer", "minimum": FACES_RANGE[0], "maximum": FACES_RANGE[1]},
        described("faces"),
        default=mesh.faces,
    )
    properties["texture"] = nullable(
        {"type": "string", "enum": ["vertex", "uv"]},
        f"{described('texture')} The formats each mode is for: see the format's branch below.",
        default=mesh.texture,
    )
    properties["texture_size"] = nullable(
        {"type": "integer", "enum": list(limits.texture_sizes)}, described("texture_size"), default=mesh.texture_size
    )
    properties["resolution"] = nullable(
        {"type": "integer", "minimum": RESOLUTION_RANGE[0], "maximum": limits.max_resolution},
        f"{described('resolution')} This service's default grid is at most {mesh.resolution}.",
    )
    properties["normalize"] = nullable({"type": "boolean"}, described("normalize"), default=mesh.normalize)
    properties |= flow_properties(defaults, properties)
    schema["oneOf"] = [
        {"title": f"{source} given", "required": [source], "properties": {source: {"type": "string"}}}
        for source in ("prompt", "image")
    ]
    schema["anyOf"] = format_branches(defaults)
    schema["description"] = (
        "Exactly one of `prompt` and `image`. Mesh options (faces, texture, texture_size, resolution, "
        "normalize) are for mesh formats only. Fields left out or null take this service's defaults."
    )
    return schema


def flow_properties(defaults: JobDefaults, properties: dict[str, Any]) -> dict[str, Any]:
    """TRELLIS's sampler options: ranged on a trellis service; on a TripoSR one only null is taken,
    and with TRELLIS ``resolution`` is only null (its grid is fixed)."""
    shape = defaults.shape
    if shape.name != "trellis":
        return {name: {"type": "null", "description": f"{properties[name]['description']} (trellis model only)"}
                for name in FLOW_FIELDS}  # fmt: skip
    steps = {"type": "integer", "minimum": 1, "maximum": shape.max_steps}
    cfg = {"type": "number", "minimum": 0, "maximum": shape.max_cfg}
    return {
        "ss_steps": nullable(steps, properties["ss_steps"]["description"], default=shape.steps),
        "slat_steps": nullable(steps, properties["slat_steps"]["description"], default=shape.steps),
        "ss_cfg": nullable(cfg, f"{properties['ss_cfg']['description']} Default: the release's, 7.5."),
        "slat_cfg": nullable(cfg, f"{properties['slat_cfg']['description']} Default: the release's, 3.0."),
        "resolution": {"type": "null", "description": "TripoSR only: TRELLIS's mesh grid is fixed (256^3)."},
    }


def sampler_option_ranges(defaults: JobDefaults) -> dict[str, Any]:
    """TRELLIS's sampler options with their ranges and defaults, for ``GET /version`` (empty for TripoSR)."""
    shape = defaults.shape
    if shape.name != "trellis":
        return {}
    steps = {"min": 1, "max": shape.max_steps, "default": shape.steps}
    return {
        "ss_steps": steps,
        "slat_steps": steps,
        "ss_cfg": {"min": 0.0, "max": shape.max_cfg, "default": 7.5},
        "slat_cfg": {"min": 0.0, "max": shape.max_cfg, "default": 3.0},
    }


def image_file_form_schema(service: ServiceConfig) -> dict[str, Any]:
    """404-gen's multipart body of ``POST /generate``: an image file and a seed."""
    return {
        "type": "object",
        "description": "404-gen miners: an image file and a seed; answers a -Y splat PLY. No other field.",
        "properties": {
            "prompt_image_file": {"type": "string", "format": "binary", "description": image_rules(service)},
            "seed": {
                "type": "integer", "minimum": 0, "maximum": MAX_SEED, "default": 0, "description": "Decimal digits.",
            },  # fmt: skip
        },
        "required": ["prompt_image_file"],
        "additionalProperties": False,
    }


def prompt_form_schema(defaults: JobDefaults, service: ServiceConfig) -> dict[str, Any]:
    """three-gen's form body of ``POST /generate/``: ``prompt``, text or a base64 image."""
    text = {**prompt_text(defaults.text.max_prompt_chars), "not": {"pattern": IMAGE_PROMPT_START}}
    image = {"type": "string", "pattern": IMAGE_PROMPT_PATTERN}
    return {
        "type": "object",
        "description": "three-gen miners: a text prompt or a base64 image; answers a +Y splat PLY. No other field.",
        "properties": {
            "prompt": {
                "anyOf": [text, image],
                "description": (
                    "Text, or a base64 PNG/JPEG/WebP image (it starts with the file's magic in base64, or is "
                    f"a data:image URL). {image_rules(service)}"
                ),
            }
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }


def mesh_option_ranges(defaults: JobDefaults) -> dict[str, Any]:
    """The mesh options with their ranges (this preset's) and defaults, for ``GET /version`` (without
    ``resolution`` for TRELLIS)."""
    mesh, limits = defaults.mesh, defaults.limits
    ranges = {
        "faces": {"min": FACES_RANGE[0], "max": FACES_RANGE[1], "default": mesh.faces},
        "texture": {
            "choices": ["vertex", "uv"],
            "default": mesh.texture,
            "formats": {mode: [name for name, fmt in FORMATS.items() if fmt.supports(mode)] for mode in ("vertex", "uv")},
        },
        "texture_size": {"choices": list(limits.texture_sizes), "default": mesh.texture_size},
        "resolution": {
            "min": RESOLUTION_RANGE[0],
            "max": limits.max_resolution,
            "default": auto_resolution(mesh.faces, mesh.resolution),
            "auto": f"unless given: about 0.7 sqrt(faces), a multiple of 32, from 96 up to {mesh.resolution}",
        },
        "normalize": {"default": mesh.normalize},
    }
    if defaults.shape.name == "trellis":
        del ranges["resolution"]  # TRELLIS's mesh grid is fixed: no request may name one
    return ranges
