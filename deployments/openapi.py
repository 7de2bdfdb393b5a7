"""The OpenAPI document: the JSON request schema and the binary answers of the asset routes.

The routes read their bodies themselves (one error shape for every malformed input), so FastAPI
cannot see the request model; these fragments tell ``/docs`` what to send and what comes back,
so that "Try it out" there produces a file.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gen3d.formats import FORMATS
from gen3d.service.api import GenerateRequest

SCHEMA_REF = "#/components/schemas/{model}"
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
    "required": ["error", "field"],
}
ERRORS = {
    str(status): {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for status, text in (
        (400, "Malformed JSON or base64"),
        (401, "Missing or wrong API key"),
        (413, "Upload too large"),
        (415, "Wrong content type"),
        (422, "A bad field, or an image with no object"),
        (502, "A stage failed"),
        (503, "Full or shutting down; see Retry-After"),
        (504, "Timed out"),
    )
}
MEDIA_TYPES = sorted({kind.media_type for fmt in FORMATS.values() for kind in fmt.files.values()})
BINARY = {"schema": {"type": "string", "format": "binary"}}

GENERATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": SCHEMA_REF.format(model="GenerateRequest")}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "404-gen miners: an image file and a seed; answers a -Y splat PLY.",
                    "properties": {"prompt_image_file": {"type": "string", "format": "binary"}, "seed": {"type": "integer"}},
                    "required": ["prompt_image_file"],
                }
            },
        },
    },
    "responses": {
        "200": {
            "description": "The asset file; `Server-Timing` gives each stage's milliseconds.",
            "content": {media_type: BINARY for media_type in MEDIA_TYPES},
        },
        **ERRORS,
    },
}

JOBS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="GenerateRequest")}}},
    },
    "responses": {
        "202": {
            "description": "Accepted: poll `status_url`, or stream `/jobs/{id}/events`.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "status_url": {"type": "string"}},
                    }
                }
            },
        },
        **ERRORS,
    },
}


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with ``GenerateRequest`` among its component schemas."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        request_schema = GenerateRequest.model_json_schema(ref_template=SCHEMA_REF)
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.update(request_schema.pop("$defs", {}))
        schemas["GenerateRequest"] = request_schema
        # Swagger UI's Authorize button sends the key on "Try it out" (a service without one ignores it).
        components["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        document["security"] = [{"ApiKey": []}]
        app.openapi_schema = document
    return app.openapi_schema
