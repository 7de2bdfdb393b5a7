"""The OpenAPI document of the running service, built from its configuration.

The routes read their bodies themselves (one error shape for every malformed input), so FastAPI
sees neither the request bodies nor most answers. This module states them: the request schemas
of ``gen3d.service.request_schema`` (the preset's enums and ranges, the service's size limits),
the answer models of ``gen3d.service.api``, every status each route can answer with the shared
error body, the real media types, and the API key only where this service asks for one. A
fuzzer (Schemathesis, in the tests) holds the service to it.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from gen3d.formats import FORMATS
from gen3d.service.answers import ErrorBody, Health, JobAccepted, JobView, VersionInfo
from gen3d.service.api import JobDefaults, ServiceConfig
from gen3d.service.job_store.records import FILE_KEYS
from gen3d.service.request_schema import (
    TEXT_EXAMPLE,
    generate_request_schema,
    image_file_form_schema,
    prompt_form_schema,
)

REF = "#/components/{kind}/{name}"
#: What each error status means, for every route that can answer it.
ERROR_MEANINGS = {
    400: "Malformed JSON, base64 or form.",
    401: "Missing or wrong `X-API-Key`.",
    404: "No such job (unknown, or expired), or no such file of it.",
    405: "Another method on this path (`Allow` lists the route's).",
    413: "Body, image or pixel count over this service's limit (the message names the setting).",
    415: "Wrong `Content-Type`.",
    422: "A bad field, named in `field`; also an image that does not decode or shows no object.",
    502: "A stage failed; `field` names it.",
    503: "Full, starting or shutting down: retry after `Retry-After` seconds.",
    504: "The request's time limit passed.",
}
ASSET_ERRORS = (400, 413, 415, 422, 502, 503, 504)
SUBMIT_ERRORS = (400, 413, 415, 422, 502, 503)
JOB_ERRORS = (404, 502, 503)
#: Routes anyone may call, whatever the API key: readiness checks must work without it.
PUBLIC_OPERATIONS = ("health",)
JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The id `POST /jobs` answered."}
ASSET_MEDIA_TYPES = sorted({kind.media_type for fmt in FORMATS.values() for kind in fmt.files.values()})
ASSET_FILE_NAMES = sorted({f"asset.{kind.extension}" for fmt in FORMATS.values() for kind in fmt.files.values()})
BINARY = {"schema": {"type": "string", "format": "binary"}}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": REF.format(kind=kind, name=name)}


def header(description: str, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string"}}


def json_answer(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("schemas", model)}}}


def asset_answer(description: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": headers, "content": {media: BINARY for media in ASSET_MEDIA_TYPES}}


#: One server-sent event of ``/jobs/{id}/events`` (the schema of each event, read as Open API 3.2's
#: ``itemSchema``): its ``data`` is a ``JobView`` in JSON.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref("schemas", "JobView")},
        "event": {"const": "message"},
    },
    "required": ["data"],
}
ASSET_HEADERS = {
    "Server-Timing": header("Milliseconds per stage and `total`, e.g. `background;dur=31.2, total;dur=412.0`."),
    "Content-Disposition": header("`attachment; filename=\"asset.<ext>\"`."),
    "X-Faces": header("Triangle count (meshes only).", required=False),
    "X-Model": header("The image-to-3D model that made the asset: `triposr` or `trellis`."),
}
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}, "description": text}
    for name, operation, text in (
        ("status", "job_status", "The job's status, stage timeline and file URLs."),
        ("events", "job_events", "The job's state at every stage transition."),
        ("file", "job_file", "One of the job's files, once made."),
    )
}
#: Per operation (FastAPI's ``operationId``: the route function's name): its success answer and
#: the error statuses it can give.
ANSWERS: dict[str, tuple[dict[str, dict[str, Any]], tuple[int, ...]]] = {
    "health": ({"200": json_answer("Ready: a warm-up job has passed every stage.", "Health")}, (503,)),
    "version": ({"200": json_answer("What this service runs and accepts.", "VersionInfo")}, ()),
    "generate": ({"200": asset_answer("The asset file, of the requested format.", ASSET_HEADERS)}, ASSET_ERRORS),
    "generate_form": ({"200": asset_answer("A +Y Gaussian-splat PLY.", ASSET_HEADERS)}, ASSET_ERRORS),
    "submit_job": (
        {"202": {**json_answer("Accepted: poll `status_url`, or stream `/jobs/{id}/events`.", "JobAccepted"),
                 "links": JOB_LINKS}},  # fmt: skip
        SUBMIT_ERRORS,
    ),
    "job_status": ({"200": json_answer("The job now.", "JobView")}, JOB_ERRORS),
    "job_file": (
        {"200": {"description": "The file.", "headers": {"Content-Disposition": header("`inline; filename=...`.")},
                 "content": {media: BINARY for media in ["image/png", *ASSET_MEDIA_TYPES]}}},  # fmt: skip
        JOB_ERRORS,
    ),
    "job_events": (
        {"200": {
            "description": (
                "Server-sent events: each `data:` line is a `JobView` (JSON), sent now and at every stage "
                "transition; `: keep-alive` comments in between; the stream ends once the job is done or failed."
            ),
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        }},  # fmt: skip
        JOB_ERRORS,
    ),
}


def error_responses() -> dict[str, Any]:
    """The shared error answers: ``{"error", "field"}``, and ``Retry-After`` with every 503."""
    responses = {}
    for status, meaning in ERROR_MEANINGS.items():
        answer = json_answer(meaning, "ErrorBody")
        if status == 503:
            seconds = {"type": "integer", "minimum": 0}
            answer["headers"] = {"Retry-After": {**header("Seconds to wait."), "schema": seconds}}
        if status == 405:
            answer["headers"] = {"Allow": header("The methods this path takes.")}
        responses[str(status)] = answer
    return responses


def request_bodies(defaults: JobDefaults, service: ServiceConfig) -> dict[str, dict[str, Any]]:
    """The request body of each operation that takes one."""
    json_body = {"schema": ref("schemas", "GenerateRequest"), "examples": {"text": {"value": TEXT_EXAMPLE}}}
    prompt_form = {"schema": ref("schemas", "PromptForm")}
    return {
        "generate": {"required": True, "content": {
            "application/json": json_body,
            "multipart/form-data": {"schema": ref("schemas", "ImageFileForm")},
        }},
        "generate_form": {"required": True, "content": {
            "application/x-www-form-urlencoded": prompt_form, "multipart/form-data": prompt_form,
        }},
        "submit_job": {"required": True, "content": {"application/json": json_body}},
    }  # fmt: skip


def component_schemas(defaults: JobDefaults, service: ServiceConfig) -> dict[str, Any]:
    """The answer models' schemas and this configuration's request schemas."""
    models = (ErrorBody, Health, JobAccepted, JobView, VersionInfo)
    _, answers = models_json_schema(
        [(model, "serialization") for model in models], ref_template=REF.format(kind="schemas", name="{model}")
    )
    return {
        **answers["$defs"],
        "GenerateRequest": generate_request_schema(defaults, service),
        "ImageFileForm": image_file_form_schema(service),
        "PromptForm": prompt_form_schema(defaults, service),
    }


def describe_operation(operation: dict[str, Any], body: dict[str, Any] | None, keyed: bool) -> None:
    """Give one of FastAPI's operations its body, answers and security, in place."""
    answers, errors = ANSWERS[operation["operationId"]]
    statuses = sorted({*errors, *((401,) if keyed else ())})
    operation["responses"] = {**answers, **{str(status): ref("responses", str(status)) for status in statuses}}
    if body is not None:
        operation["requestBody"] = body
    if keyed:
        operation["security"] = [{"ApiKey": []}]
    for parameter in operation.get("parameters", []):
        if parameter["name"] == "job_id":
            parameter["schema"] = JOB_ID
        elif parameter["name"] == "name":
            parameter["schema"] = {"type": "string", "enum": sorted(FILE_KEYS) + ASSET_FILE_NAMES}


def openapi_document(app: FastAPI, defaults: JobDefaults, service: ServiceConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app`` as configured by ``defaults`` (the preset) and ``service``."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    bodies = request_bodies(defaults, service)
    for operations in document["paths"].values():
        for operation in operations.values():
            keyed = service.api_key is not None and operation["operationId"] not in PUBLIC_OPERATIONS
            describe_operation(operation, bodies.get(operation["operationId"]), keyed)
    document["components"] = {"schemas": component_schemas(defaults, service), "responses": error_responses()}
    if service.api_key is not None:
        # Swagger UI's Authorize button then sends the key with "Try it out".
        document["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    return document
