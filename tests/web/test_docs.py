"""``/docs`` in headless Chromium: Swagger UI from local files only, the real request bodies, and
"Try it out" that works: ``POST /jobs`` answers 202 and ``POST /generate`` a file."""

import httpx
import pytest
from playwright.sync_api import Locator, Page

from tests.conftest import ServedGraph
from tests.web.studio import WatchedPage

pytestmark = [pytest.mark.serve, pytest.mark.browser]
EXECUTE_TIMEOUT_MS = 120_000


def generate_request_fields(url: str) -> list[str]:
    """The property names of ``POST /generate``'s JSON body, as the service's OpenAPI document has them."""
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    body = document["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return list(document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["properties"])


def operation(page: Page, path: str) -> Locator:
    """The opened ``POST path`` block of the Swagger UI page."""
    block = page.locator(".opblock.opblock-post").filter(has=page.locator(f'.opblock-summary-path[data-path="{path}"]'))
    block.locator(".opblock-summary").click()
    block.locator(".opblock-section-request-body").wait_for()
    return block


def try_it_out(block: Locator) -> str:
    """Send the example body with "Try it out" -> "Execute"; the live answer's status code."""
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status")
    status.wait_for(timeout=EXECUTE_TIMEOUT_MS)
    return status.inner_text().strip()


def test_docs_render_offline_and_show_the_generate_request_body(watched: WatchedPage, served: ServedGraph) -> None:
    fields = generate_request_fields(served.url)
    assert {"prompt", "image", "seed", "format"} <= set(fields)
    page = watched.page
    page.goto(f"{served.url}/docs")
    body = operation(page, "/generate").locator(".opblock-section-request-body")
    assert "application/json" in body.inner_text() and '"prompt": "a blue ceramic mug"' in body.inner_text()
    body.get_by_role("tab", name="Schema").click()
    shown = body.inner_text()
    assert "Exactly one of prompt and image" in shown
    for field in fields:  # the Schema tab lists every property of the request
        assert field in shown, field
    # The `watched` fixture fails the test if anything was requested from off this machine.


def test_try_it_out_submits_a_job_and_generates_a_file(watched: WatchedPage, served: ServedGraph) -> None:
    page = watched.page
    page.goto(f"{served.url}/docs")
    assert try_it_out(operation(page, "/jobs")) == "202"
    generate = operation(page, "/generate")
    assert try_it_out(generate) == "200"
    assert "model/gltf-binary" in generate.locator(".live-responses-table").inner_text()
