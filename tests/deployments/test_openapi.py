"""The OpenAPI document, built without a server: valid, and true to the configuration it describes."""

import pytest
from openapi_spec_validator import validate

from deployments.ingress import app
from deployments.openapi import ERROR_MEANINGS, openapi_document
from gen3d.config import load_preset
from gen3d.service.api import JobDefaults, ServiceConfig

PRESET = load_preset("tiny")
DEFAULTS = JobDefaults(PRESET.text_to_image, PRESET.mesh_defaults(), PRESET.mesh_limits())
KEYED = ServiceConfig(api_key="secret")
OPEN = ServiceConfig()


def operations(document: dict) -> dict[str, dict]:
    """Each operation of the document by operationId."""
    return {op["operationId"]: op for path in document["paths"].values() for op in path.values()}


@pytest.mark.parametrize("service", [OPEN, KEYED], ids=["no-key", "key"])
def test_the_document_passes_the_openapi_validator(service: ServiceConfig) -> None:
    validate(openapi_document(app, DEFAULTS, service))


def test_no_key_no_security_anywhere() -> None:
    document = openapi_document(app, DEFAULTS, OPEN)
    assert "securitySchemes" not in document["components"] and "security" not in document
    for operation in operations(document).values():
        assert "security" not in operation and "401" not in operation["responses"]


def test_a_key_is_required_exactly_where_the_service_checks_it() -> None:
    document = openapi_document(app, DEFAULTS, KEYED)
    assert document["components"]["securitySchemes"] == {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for name, operation in operations(document).items():
        keyed = name != "health"
        assert ("security" in operation) == keyed and ("401" in operation["responses"]) == keyed, name
    # The studio, /docs and /openapi.json are public and outside the document.
    assert set(document["paths"]) == {
        "/health", "/version", "/generate", "/generate/", "/jobs",
        "/jobs/{job_id}", "/jobs/{job_id}/files/{name}", "/jobs/{job_id}/events",
    }  # fmt: skip


def test_every_error_answer_is_the_shared_body_and_503_says_when_to_retry() -> None:
    document = openapi_document(app, DEFAULTS, KEYED)
    shared = document["components"]["responses"]
    assert set(shared) == {str(status) for status in ERROR_MEANINGS}
    for answer in shared.values():
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert shared["503"]["headers"]["Retry-After"]["required"] is True
    for name, operation in operations(document).items():
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert answer == {"$ref": f"#/components/responses/{status}"}, (name, status)
    generate = operations(document)["generate"]["responses"]
    assert {"400", "401", "413", "415", "422", "502", "503", "504"} <= set(generate)
    assert "404" in operations(document)["job_status"]["responses"]


def test_real_media_types_per_route() -> None:
    ops = operations(openapi_document(app, DEFAULTS, OPEN))
    assert set(ops["generate"]["responses"]["200"]["content"]) == {
        "model/gltf-binary", "model/obj", "application/zip", "application/ply", "application/octet-stream",
    }  # fmt: skip
    assert "image/png" in ops["job_file"]["responses"]["200"]["content"]
    assert set(ops["job_events"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(ops["generate"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert set(ops["generate_form"]["requestBody"]["content"]) == {"application/x-www-form-urlencoded", "multipart/form-data"}
    assert ops["generate_form"]["requestBody"]["required"] is True  # no form: 415, as the document says
    links = ops["submit_job"]["responses"]["202"]["links"]
    assert links["status"] == {
        "operationId": "job_status", "parameters": {"job_id": "$response.body#/id"}, "description": links["status"]["description"],
    }  # fmt: skip


def test_request_schemas_carry_this_configurations_values() -> None:
    document = openapi_document(app, DEFAULTS, ServiceConfig(max_upload_bytes=2**20, min_image_side=32))
    schemas = document["components"]["schemas"]
    request = schemas["GenerateRequest"]["properties"]
    assert request["steps"]["anyOf"][0]["enum"] == PRESET.text_to_image.allowed_steps
    assert request["texture_size"]["anyOf"][0]["enum"] == [256, 512]
    assert request["resolution"]["anyOf"][0]["maximum"] == 128
    assert "1.0 MiB" in request["image"]["description"] and "at least 32 px" in request["image"]["description"]
    assert set(schemas["ImageFileForm"]["properties"]) == {"prompt_image_file", "seed"}
    assert schemas["PromptForm"]["required"] == ["prompt"]
