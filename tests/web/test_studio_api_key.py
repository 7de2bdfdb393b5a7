"""The studio against a service with an API key: it asks for the key and then works without SSE."""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServedGraph
from tests.serve_admin import ServeAdmin, redeployed, with_service
from tests.web.studio import Studio, WatchedPage

pytestmark = [pytest.mark.serve, pytest.mark.browser]

API_KEY = f"key-{uuid.uuid4().hex}"
RECONFIGURE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def keyed(served: ServedGraph) -> Iterator[str]:
    """The running app with an API key (the ingress's user_config, applied in place); restored after."""
    admin = ServeAdmin.from_log(served.log)

    def ready() -> bool:
        return httpx.get(f"{served.url}/health", timeout=10).status_code == 200

    with redeployed(admin, lambda config: with_service(config, api_key=API_KEY), ready, RECONFIGURE_TIMEOUT_S):
        yield API_KEY


def test_the_page_asks_for_the_key_and_then_generates(watched: WatchedPage, served: ServedGraph, keyed: str) -> None:
    watched.watch.allow(r"status of 401")  # the page's first /version, and the wrong key below
    events: list[str] = []
    watched.page.on("request", lambda request: "/events" in request.url and events.append(request.url))
    page = Studio(watched.page, served.url, api_key=keyed)
    page.page.goto(f"{served.url}/studio")
    page.wait_for("!$('api-key-form').hidden")
    assert page.page.is_disabled("#generate")
    assert "needs an API key" in page.page.inner_text("#service-status")

    page.page.fill("#api-key", "wrong")
    page.page.click("#api-key-form button")
    page.wait_for("$('service-status').textContent.includes('refused')")
    assert page.page.is_disabled("#generate")

    page.page.fill("#api-key", keyed)
    page.page.click("#api-key-form button")
    page.wait_for("!$('generate').disabled")
    assert page.page.evaluate("localStorage.getItem('gen3d.apiKey')") == keyed
    page.page.fill("#prompt", "a locked box")
    job = page.generate()
    assert job["status"] == "done"
    # Files need the key too: the page fetched them with it (an <img src> could not have).
    assert page.image_loaded("#generated-image") and page.image_loaded("#cutout-image")
    assert events == [], "EventSource cannot send the key: the page must poll instead"
