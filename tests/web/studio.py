"""Driving the studio page in tests: generate, read the timeline, judge rendered pixels."""

import io
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Locator, Page, Route

RESULT_TIMEOUT_S = 180
POLL_S = 0.1
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "studio.png"


class PageWatch:
    """What a page did wrong: console errors, page errors and off-host requests.

    Attributes:
        errors: console ``error`` messages and uncaught exceptions, in order.
        off_host: URLs the page tried to load from anywhere but this machine.
        allowed: regular expressions of console errors the test expects (e.g. a 422 the API sent).
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.off_host: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        """Expect console errors matching ``pattern`` (Chromium logs every 4xx fetch as one)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def route(self, route: Route) -> None:
        """Let local requests through; abort and record any other."""
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.off_host.append(route.request.url)
            route.abort()


@dataclass(frozen=True)
class WatchedPage:
    """A Playwright page and what it did wrong."""

    page: Page
    watch: PageWatch


@dataclass(frozen=True)
class TimelineRow:
    """One row of the page's timeline: stage key, state word and seconds as shown (None if blank)."""

    stage: str
    state: str
    seconds: float | None


@dataclass(frozen=True)
class Studio:
    """The studio page of a running service.

    Attributes:
        page: the Playwright page.
        url: the service's base URL.
        api_key: the service's API key, if it has one.
    """

    page: Page
    url: str
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """What this test's own API calls send (the key, when the service has one)."""
        return {} if self.api_key is None else {"X-API-Key": self.api_key}

    def open(self) -> None:
        """Load the page and wait until it has read /version (Generate enabled)."""
        self.page.goto(f"{self.url}/studio")
        self.wait_for("!$('generate').disabled")

    def start_from_image(self, path: Path) -> None:
        self.page.check('input[name="source"][value="image"]')
        self.page.set_input_files("#image-file", str(path))
        self.wait_for("!$('image-preview').hidden")

    def generate(self) -> dict[str, Any]:
        """Press Generate, wait until the viewer shows the result, and return the job as the API has it.

        Raises:
            AssertionError: the page showed an error instead (its text is the message).
        """
        self.page.click("#generate")
        self.wait_for("$('viewer').dataset.state === 'shown' || !$('request-error').hidden")
        error = self.page.locator("#request-error")
        assert error.is_hidden(), f"the page showed an error: {error.inner_text()}"
        job_id = self.page.get_attribute("#viewer", "data-job")
        return httpx.get(f"{self.url}/jobs/{job_id}", headers=self.headers, timeout=30).json()

    def shown_error(self) -> str:
        """Press Generate and return the error line's text once it appears."""
        self.page.click("#generate")
        self.wait_for("!$('request-error').hidden")
        return self.page.inner_text("#request-error")

    def wait_for(self, condition: str) -> None:
        """Wait until a JavaScript expression holds; ``$(id)`` is ``document.getElementById(id)``.

        Polls from here: the page's CSP forbids the eval that Playwright's in-page polling
        (``wait_for_function``) needs, and its default animation-frame polling is delayed by tens
        of seconds while a software-WebGL viewer renders.

        Raises:
            TimeoutError: the expression was still false after ``RESULT_TIMEOUT_S``.
        """
        script = f"() => {{ const $ = (id) => document.getElementById(id); return Boolean({condition}); }}"
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while not self.page.evaluate(script):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {RESULT_TIMEOUT_S} s: {condition}")
            time.sleep(POLL_S)

    def timeline(self) -> list[TimelineRow]:
        rows = self.page.eval_on_selector_all(
            "#timeline li",
            """rows => rows.map(row => [row.dataset.stage, row.querySelector('.stage-state').textContent,
                                         row.querySelector('.stage-seconds').textContent])""",
        )
        return [TimelineRow(stage, state, shown_seconds(text)) for stage, state, text in rows]

    def image_loaded(self, selector: str) -> bool:
        """Whether an <img> is visible and has decoded pixels."""
        return self.page.eval_on_selector(selector, "img => !img.hidden && img.complete && img.naturalWidth > 0")

    def next_frames(self, count: int = 3) -> None:
        """Let the page draw ``count`` animation frames (a changed scene is on screen after them)."""
        self.page.evaluate(
            """n => new Promise(done => {
                const step = k => (k ? requestAnimationFrame(() => step(k - 1)) : done());
                step(n);
            })""",
            count,
        )


def still_shot(locator: Locator, folder: Path, name: str, tries: int = 20) -> bytes:
    """Screenshot an element once two consecutive shots match (a viewer eases its camera in after
    a load), save it as ``folder/name.png`` and return the PNG bytes.

    Raises:
        AssertionError: the element kept changing for ``tries`` shots.
    """
    previous = locator.screenshot()
    for _ in range(tries):
        current = locator.screenshot()
        if mean_difference(previous, current) == 0:
            (folder / f"{name}.png").write_bytes(current)
            return current
        previous = current
    raise AssertionError(f"{name}: the element was still changing after {tries} screenshots")


def shown_seconds(text: str) -> float | None:
    """``"0.31 s"`` -> 0.31; blank -> None."""
    match = re.fullmatch(r"\s*([0-9.]+) s\s*", text)
    return float(match.group(1)) if match else None


def api_error_text(url: str, body: dict[str, Any], timeout_s: float = 120) -> str:
    """What the API says about ``body``: ``"<field>: <error>"`` from a 4xx, or from the job's failure."""
    response = httpx.post(f"{url}/jobs", json=body, timeout=30)
    if response.status_code != 202:
        error = response.json()
    else:
        deadline = time.monotonic() + timeout_s
        job = httpx.get(f"{url}/jobs/{response.json()['id']}", timeout=30).json()
        while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = httpx.get(f"{url}/jobs/{response.json()['id']}", timeout=30).json()
        assert job["status"] == "failed", f"the API accepted {sorted(body)} and finished the job"
        error = job["error"]
    return f"{error['field']}: {error['error']}" if error["field"] else error["error"]


@dataclass(frozen=True)
class PixelStats:
    """How much a screenshot shows besides its background.

    Attributes:
        std: standard deviation of luminance over all pixels (0 for a blank canvas).
        foreground: fraction of pixels more than 24 levels (any channel) from the border's median colour.
    """

    std: float
    foreground: float


def pixel_stats(png: bytes) -> PixelStats:
    """Measure a screenshot (PNG bytes) against its own border colour."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    foreground = float((np.abs(rgb - background).max(axis=2) > 24).mean())
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return PixelStats(float(luminance.std()), foreground)


def mean_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two same-size screenshots, in 0..255 levels."""
    first, second = (np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) for png in (a, b))
    return float(np.abs(first - second).mean())


def save_shot(locator: Locator | Page, folder: Path, name: str) -> bytes:
    """Screenshot a page or element into ``folder/name.png`` and return the PNG bytes."""
    return locator.screenshot(path=folder / f"{name}.png")


def update_docs_screenshot(shot: Path) -> None:
    """Copy a studio screenshot to docs/studio.png when ``GEN3D_UPDATE_DOCS_SCREENSHOT=1``."""
    if os.environ.get("GEN3D_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS_SCREENSHOT)
