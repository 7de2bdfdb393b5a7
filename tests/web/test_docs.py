"""``/docs`` in headless Chromium: Swagger UI from local files only, with the request schema."""

import httpx
import pytest

from tests.conftest import ServedGraph
from tests.web.studio import WatchedPage

pytestmark = [pytest.mark.serve, pytest.mark.browser]


def generate_request_fields(url: str) -> list[str]:
    """The property names of ``POST /generate``'s JSON body, as the service's OpenAPI schema has them."""
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    return list(body["properties"])


def test_docs_render_offline_and_show_the_generate_request_body(watched: WatchedPage, served: ServedGraph) -> None:
    fields = generate_request_fields(served.url)
    assert {"prompt", "image", "seed", "format"} <= set(fields)
    page = watched.page
    page.goto(f"{served.url}/docs")
    generate = page.locator(".opblock.opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/generate"]')
    )
    generate.locator(".opblock-summary").click()
    body = generate.locator(".opblock-section-request-body")
    body.wait_for()
    shown = body.inner_text()
    assert "application/json" in shown
    for field in fields:  # Swagger UI's example value lists every property of the schema
        assert f'"{field}"' in shown, field
    # The `watched` fixture fails the test if anything was requested from off this machine.
