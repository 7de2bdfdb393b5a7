"""Real-browser fixtures: Debian's Chromium driven by Playwright, never a downloaded browser.

Every page is watched: console errors, uncaught page errors and any request that leaves the
machine (aborted and recorded) fail the test at teardown, unless the test allowed a message.
Screenshots go to ``$GEN3D_SCREENSHOTS`` (default: a pytest temporary folder).
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.web.studio import PageWatch, WatchedPage

CHROMIUM = Path(os.environ.get("GEN3D_CHROMIUM", "/usr/bin/chromium"))
# Headless without a GPU: WebGL2 on SwiftShader (software), which Chromium only allows when asked.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session; skipped when Debian's chromium is not installed,
    unless ``GEN3D_REQUIRE_BROWSER=1`` (CI), where a missing browser fails."""
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set GEN3D_CHROMIUM)"
        if os.environ.get("GEN3D_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests save their screenshots."""
    folder = os.environ.get("GEN3D_SCREENSHOTS")
    if folder is None:
        return tmp_path_factory.mktemp("screenshots")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def watched(chromium: Browser, request: pytest.FixtureRequest, screenshots: Path) -> Iterator[WatchedPage]:
    """A fresh 1280x800 page (own storage) whose errors and off-host requests fail the test.

    The page's last state is saved as ``<test name>.png`` in the screenshot folder.
    """
    context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
    watch = PageWatch()
    context.route("**/*", watch.route)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and watch.errors.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
    yield WatchedPage(page, watch)
    page.screenshot(path=screenshots / (re.sub(r"[^\w.-]", "_", request.node.name) + ".png"))
    context.close()
    assert not watch.off_host, f"the page tried to load from off this machine: {watch.off_host}"
    assert not watch.unexpected(), f"the page logged errors: {watch.unexpected()}"
