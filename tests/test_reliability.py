"""Reliability and security of the served graph, end to end through ``serve run`` (tiny preset, CPU).

Bad input gets a clear 4xx, the service bounds its load and time, keeps payloads out of its logs,
listens on loopback only, survives a stage replica dying, and answers every request under load.
The API-key, back-pressure and timeout tests redeploy the running app with other builder args
through the dashboard's Serve REST API and restore the original config afterwards.
"""

import base64
import io
import json
import os
import random
import re
import signal
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import trimesh

from gen3d.imaging import encode_png
from gen3d.service.api import ServiceConfig
from tests.conftest import FIXTURES, ServedGraph
from tests.serve_admin import (
    ServeAdmin,
    is_loopback,
    listening_addresses,
    log_texts,
    redeployed,
    replica_log_texts,
    wait_for,
    with_service,
)

pytestmark = pytest.mark.serve
TIMEOUT = 120
TEXT = {"prompt": "a red teapot", "seed": 5}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fixture_b64(name: str) -> str:
    return b64((FIXTURES / name).read_bytes())


def uniform_png(height: int, width: int, value: tuple[int, ...]) -> bytes:
    """A PNG of one colour: RGB for a 3-tuple, RGBA for a 4-tuple."""
    return encode_png(np.full((height, width, len(value)), value, dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A pixel bomb: a ~100-byte PNG whose header declares ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def post_json(url: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=TIMEOUT)


def assert_glb(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    loaded = trimesh.load(io.BytesIO(response.content), file_type="glb", process=False)
    mesh = loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded
    assert len(mesh.faces) > 0


# -- 1. bad input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """One malformed request and the error it must get.

    Attributes:
        status: the exact HTTP status.
        field: the ``field`` of the JSON error.
        fragment: a piece of the ``error`` message.
        request: builds ``httpx.request`` arguments (``method``, ``path`` and body), lazily so
            large payloads exist only while their case runs.
    """

    status: int
    field: str | None
    fragment: str
    request: Callable[[], dict[str, Any]]


def post(path: str = "/generate", **body: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "path": path, **body}


def raw_body(content: bytes, content_type: str) -> Callable[[], dict[str, Any]]:
    return post(content=content, headers={"content-type": content_type})


def image_body(data: bytes) -> Callable[[], dict[str, Any]]:
    return post(json={"image": b64(data)})


def file_upload(data: bytes, seed: str = "0") -> dict[str, Any]:
    return {"files": {"prompt_image_file": ("x.png", data, "image/png")}, "data": {"seed": seed}}


def case(case_id: str, status: int, field: str | None, fragment: str, request: Callable[[], dict]) -> Any:
    return pytest.param(BadInput(status, field, fragment, request), id=case_id)


MIB = 2**20
CHAIR = (FIXTURES / "chair.png").read_bytes()
TEAPOT_FILE = {"prompt_image_file": ("teapot.png", (FIXTURES / "teapot.png").read_bytes(), "image/png")}
WHITE, CLEAR = uniform_png(64, 64, (255, 255, 255)), uniform_png(64, 64, (0, 0, 0, 0))
BAD_INPUTS = [
    case("empty-prompt", 422, "prompt", "expected non-empty text", post(json={"prompt": ""})),
    case("whitespace-prompt", 422, "prompt", "expected non-empty text", post(json={"prompt": " \n\t "})),
    case("long-prompt", 422, "prompt", "at most 1000 characters", post(json={"prompt": "a" * 5000})),
    case("control-chars", 422, "prompt", "control characters", post(json={"prompt": "a\x00b"})),
    case("non-utf8", 400, "body", "UTF-8 JSON", raw_body(b'{"prompt": "\xff\xfe"}', "application/json")),
    case("malformed-json", 400, "body", "UTF-8 JSON", raw_body(b'{"prompt": ', "application/json")),
    case("text-plain", 415, "content-type", "got text/plain", raw_body(b"a cube", "text/plain")),
    case("format", 422, "format", "'glb', 'obj', 'ply' or 'splat'", post(json={**TEXT, "format": "fbx"})),
    case("up-axis", 422, "up", "'+y' or '-y'", post(json={**TEXT, "format": "splat", "up": "z"})),
    case("seed-negative", 422, "seed", "greater than or equal to 0", post(json={**TEXT, "seed": -1})),
    case("seed-2^40", 422, "seed", "less than or equal to 4294967295", post(json={**TEXT, "seed": 2**40})),
    case("seed-text", 422, "seed", "valid integer", post(json={**TEXT, "seed": "abc"})),
    case("steps", 422, "steps", "expected one of [3, 4], got 99", post(json={**TEXT, "steps": 99})),
    case("width", 422, "width", "expected one of [64] pixels, got 65", post(json={**TEXT, "width": 65})),
    case("unknown-field", 422, "colour", "Extra inputs", post(json={**TEXT, "colour": "red"})),
    case("faces-low", 422, "faces", "greater than or equal to 1000", post(json={**TEXT, "faces": 10})),
    case("faces-high", 422, "faces", "less than or equal to 500000", post(json={**TEXT, "faces": 10**7})),
    case("texture", 422, "texture", "'vertex' or 'uv'", post(json={**TEXT, "texture": "pbr"})),
    case("texture-on-ply", 422, "texture", "available for ['glb', 'obj']", post(json={**TEXT, "format": "ply", "texture": "uv"})),
    case("mesh-option-on-splat", 422, "faces", "applies to mesh formats", post(json={**TEXT, "format": "splat", "faces": 5000})),
    case("texture-size", 422, "texture_size", "expected one of [256, 512]", post(json={**TEXT, "texture_size": 2048})),
    case("resolution", 422, "resolution", "less than or equal to 512", post(json={**TEXT, "resolution": 4096})),
    case("resolution-preset", 422, "resolution", "at most 128 on this service", post(json={**TEXT, "resolution": 160})),
    case("normalize", 422, "normalize", "valid boolean", post(json={**TEXT, "normalize": "maybe"})),
    case("jobs-text-plain", 415, "content-type", "got text/plain", post("/jobs", content=b"x", headers={"content-type": "text/plain"})),
    case("jobs-empty-prompt", 422, "prompt", "expected non-empty text", post("/jobs", json={"prompt": ""})),
    case("both", 422, "body", "exactly one of", post(json={"prompt": "x", "image": b64(CHAIR)})),
    case("neither", 422, "body", "exactly one of", post(json={"seed": 1})),
    case("both-null", 422, "body", "exactly one of", post(json={"prompt": None, "image": None})),
    case("seed-as-string", 422, "seed", "valid integer", post(json={**TEXT, "seed": "5"})),
    case("not-base64", 400, "image", "base64", post(json={"image": "!!not*base64!!"})),
    case("non-ascii-base64", 400, "image", "base64", post(json={"image": "é" + b64(CHAIR)})),
    case("text-as-image", 422, "image", "no decoder recognises", image_body(b"just some text")),
    case("data-url-text", 400, "image", "data:image/<type>;base64", post(json={"image": "data:text/plain;base64,aGk="})),
    case("truncated-png", 422, "image", "truncated", image_body(CHAIR[: len(CHAIR) // 2])),
    case("pixel-bomb", 413, "image", "got 5000x5000", image_body(header_only_png(5000, 5000))),
    case("pil-bomb", 413, "image", "decompression bomb", image_body(header_only_png(10**5, 10**5))),
    case("1x1-image", 422, "image", "got 1x1", image_body(uniform_png(1, 1, (9, 9, 9)))),
    case("fully-transparent", 422, "image", "in the image's alpha channel", image_body(CLEAR)),
    case("no-foreground", 422, "image", "after background removal", image_body(WHITE)),
    case("oversize-json", 413, "body", "max_upload_bytes", lambda: post(json={"image": "A" * 15_000_000})()),
    case("oversize-file", 413, "prompt_image_file", "11.0 MiB, over the upload limit of 10.0 MiB", lambda: post(**file_upload(b"\0" * (11 * MIB)))()),
    case("multipart-no-file", 422, "prompt_image_file", "is required", post(files={"x": ("x.png", CHAIR)})),
    case("multipart-seed", 422, "seed", "expected an integer", post(**file_upload(CHAIR, seed="1.5"))),
    case("multipart-not-image", 422, "prompt_image_file", "no decoder recognises", post(**file_upload(b"GIF"))),
    case("multipart-1x1", 422, "prompt_image_file", "got 1x1", post(**file_upload(uniform_png(1, 1, (9, 9, 9))))),
    case("multipart-extra-field", 422, "colour", "not a field of this form", post(**{**file_upload(CHAIR), "data": {"colour": "red"}})),
    case("three-gen-no-prompt", 422, "prompt", "is required", post("/generate/", data={"seed": "1"})),
    case("three-gen-extra-field", 422, "seed", "not a field of this form", post("/generate/", data={"prompt": "a mug", "seed": "1"})),
    case("three-gen-bad-image", 422, "prompt", "got 1x1", post("/generate/", data={"prompt": b64(uniform_png(1, 1, (9, 9, 9)))})),
    case("three-gen-json", 415, "content-type", "expected a form", post("/generate/", json=TEXT)),
    case("three-gen-no-form", 415, "content-type", "got none", post("/generate/")),
    case("route", 404, None, "Not Found", post("/nowhere", json=TEXT)),
    case("method", 405, None, "Method Not Allowed", lambda: {"method": "GET", "path": "/generate"}),
]


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_bad_input_gets_clear_4xx_json(served: ServedGraph, bad: BadInput) -> None:
    spec = bad.request()
    response = httpx.request(spec.pop("method"), served.url + spec.pop("path"), timeout=TIMEOUT, **spec)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "field"}
    assert body["field"] == bad.field
    assert bad.fragment in body["error"]


def test_service_unharmed_after_bad_inputs(served: ServedGraph) -> None:
    assert httpx.get(f"{served.url}/health", timeout=TIMEOUT).json() == {"status": "ok"}
    assert_glb(post_json(served.url, TEXT))


# -- 3. security: logs and bind address ---------------------------------------------------------


def served_logs(served: ServedGraph) -> dict[str, str]:
    return log_texts(served.log, served.process.pid)


def test_logs_do_not_contain_payloads(served: ServedGraph) -> None:
    marker = f"quokka-{uuid.uuid4().hex}"
    image = fixture_b64("teapot.png")
    requests = [({"prompt": f"a {marker} statue"}, 200), ({"image": image}, 200), ({"prompt": f"{marker}\x01"}, 422)]
    request_ids = []
    for body, status in requests:
        request_ids.append(uuid.uuid4().hex)
        response = post_json(served.url, body, headers={"X-Request-ID": request_ids[-1]})
        assert response.status_code == status, response.text

    # The access-log lines carry the request ids: once they are written, so would a payload be.
    def logged() -> bool:
        texts = served_logs(served)
        ingress_logs = "".join(text for path, text in texts.items() if "replica_gen3d_Ingress" in path)
        return all(rid in texts[str(served.log)] and rid in ingress_logs for rid in request_ids)

    wait_for(logged, 60, "access-log lines of the probe requests")
    for path, text in served_logs(served).items():
        assert marker not in text, f"prompt text logged in {path}"
        assert image[2000:2048] not in text, f"base64 image logged in {path}"


def replica_log(served: ServedGraph, deployment: str) -> str:
    """Everything the replica log files of one deployment hold."""
    return "".join(replica_log_texts(served, deployment).values())


def test_start_up_progress_reaches_the_replica_logs(served: ServedGraph) -> None:
    # INFO records of our own loggers, emitted in replica constructors (gen3d) and by the ingress
    # (deployments), must land where the dashboard shows them, in Serve's format.
    text_log = replica_log(served, "TextToImageDeployment")
    assert re.search(r"INFO .*text_to_image: tiny pipeline ready on cpu", text_log), text_log[-2000:]
    assert "text_to_image warm-up 64x64" in text_log
    assert "graph warm-up finished" in replica_log(served, "Ingress")


def test_http_and_dashboard_listen_on_loopback_only(served: ServedGraph) -> None:
    for url in (served.url, ServeAdmin.from_log(served.log).dashboard):
        addresses = listening_addresses(int(url.rsplit(":", 1)[1]))
        assert addresses, f"nothing listens for {url}"
        assert all(is_loopback(address) for address in addresses), (url, addresses)


# -- 5. load ------------------------------------------------------------------------------------


LOAD_REQUESTS = 200
CONCURRENCY = 16
HUNG = ("ReadTimeout", "WriteTimeout", "PoolTimeout")


@dataclass(frozen=True)
class LoadRequest:
    """One request of the load mix: ``httpx.request`` arguments and the status it must get."""

    kind: str
    status: int
    args: dict[str, Any]


def load_mix() -> list[LoadRequest]:
    """Valid text/image, glb/splat requests on all three routes, and several kinds of bad ones."""
    chair, ghost = fixture_b64("chair.png"), fixture_b64("ghost_rgba.png")
    post = {"method": "POST", "url": "/generate"}
    valid = [
        LoadRequest("text-glb", 200, {**post, "json": {"prompt": "a lamp", "seed": 1}}),
        LoadRequest("text-splat", 200, {**post, "json": {"prompt": "a boot", "format": "splat"}}),
        LoadRequest("image-glb", 200, {**post, "json": {"image": chair}}),
        LoadRequest("image-splat", 200, {**post, "json": {"image": ghost, "format": "splat", "up": "-y"}}),
        LoadRequest("three-gen", 200, {"method": "POST", "url": "/generate/", "data": {"prompt": "a mug"}}),
        LoadRequest("404-gen", 200, {**post, "files": TEAPOT_FILE, "data": {"seed": "2"}}),
    ]
    invalid = [
        LoadRequest("empty-prompt", 422, {**post, "json": {"prompt": " "}}),
        LoadRequest("bad-seed", 422, {**post, "json": {"prompt": "x", "seed": -5}}),
        LoadRequest("malformed", 400, {**post, "content": b"{", "headers": {"content-type": "application/json"}}),
        LoadRequest("text-plain", 415, {**post, "content": b"x", "headers": {"content-type": "text/plain"}}),
        LoadRequest("not-base64", 400, {**post, "json": {"image": "%%%"}}),
        LoadRequest("no-foreground", 422, {**post, "json": {"image": b64(uniform_png(64, 64, (255, 255, 255)))}}),
        LoadRequest("route", 404, {"method": "GET", "url": "/missing"}),
    ]
    half = LOAD_REQUESTS // 2
    mix = [valid[i % len(valid)] for i in range(half)] + [invalid[i % len(invalid)] for i in range(half)]
    random.Random(0).shuffle(mix)
    return mix


def timed(client: httpx.Client, request: LoadRequest) -> tuple[LoadRequest, int | str, float]:
    """Send one request; return it, its status (or the exception's name) and its latency (s)."""
    start = time.perf_counter()
    try:
        response = client.request(**request.args)
        outcome: int | str = response.status_code
        if response.status_code == 200 and not response.content:
            outcome = "empty-200"
    except httpx.HTTPError as error:
        outcome = type(error).__name__
    return request, outcome, time.perf_counter() - start


def load_report(results: list[tuple[LoadRequest, int | str, float]], wall_s: float) -> dict[str, Any]:
    latencies = np.array([latency for _, _, latency in results])
    return {
        "requests": len(results),
        "concurrency": CONCURRENCY,
        "by_status": dict(Counter(str(outcome) for _, outcome, _ in results)),
        "by_kind": dict(Counter(request.kind for request, _, _ in results)),
        "wrong_status": sum(outcome != request.status for request, outcome, _ in results),
        "hung": sum(outcome in HUNG for _, outcome, _ in results),
        "lost": sum(isinstance(outcome, str) and outcome not in HUNG for _, outcome, _ in results),
        "p50_s": float(np.percentile(latencies, 50)),
        "p95_s": float(np.percentile(latencies, 95)),
        "max_s": float(latencies.max()),
        "wall_s": wall_s,
        "requests_per_s": len(results) / wall_s,
    }


def test_load_every_request_answered_as_expected(served: ServedGraph) -> None:
    mix = load_mix()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with (
        httpx.Client(base_url=served.url, timeout=TIMEOUT, limits=limits) as client,
        ThreadPoolExecutor(CONCURRENCY) as pool,
    ):
        start = time.perf_counter()
        results = list(pool.map(lambda request: timed(client, request), mix))
        wall_s = time.perf_counter() - start
    report = load_report(results, wall_s)
    if os.environ.get("GEN3D_LOAD_REPORT"):
        with open(os.environ["GEN3D_LOAD_REPORT"], "w") as out:
            json.dump(report, out, indent=2)
    print(
        f"\nload: {report['requests']} requests at concurrency {CONCURRENCY} in {wall_s:.1f} s "
        f"({report['requests_per_s']:.1f}/s), statuses {report['by_status']}, "
        f"p50 {report['p50_s']:.2f} s, p95 {report['p95_s']:.2f} s, max {report['max_s']:.2f} s"
    )
    wrong = [(request.kind, outcome) for request, outcome, _ in results if outcome != request.status]
    assert not wrong, wrong
    assert len(results) == LOAD_REQUESTS


# -- 4. faults ----------------------------------------------------------------------------------

DYING_BURST = 16
DYING_ATTEMPTS = 5


def kill_image_to_3d_during_burst(served: ServedGraph, admin: ServeAdmin) -> tuple[int, list[httpx.Response]]:
    """SIGKILL the image_to_3d replica while a burst of image requests flows through it.

    The kill comes once two answers are back, so the burst is moving through the stage; whether
    the replica has accepted a request at that instant is still up to timing. Returns the killed
    replica's pid and the burst's responses.
    """
    pid = admin.replica_pid("ImageTo3DDeployment")
    image = fixture_b64("chair.png")
    with ThreadPoolExecutor(DYING_BURST) as pool:
        futures = [
            pool.submit(post_json, served.url, {"image": image, "format": "splat", "seed": i}) for i in range(DYING_BURST)
        ]
        answered = as_completed(futures)
        for _ in range(2):
            early = next(answered).result()
            assert early.status_code == 200, early.text
        os.kill(pid, signal.SIGKILL)
        return pid, [future.result() for future in futures]


def test_stage_replica_dying_mid_request_gives_502_then_recovers(served: ServedGraph) -> None:
    admin = ServeAdmin.from_log(served.log)
    failed: list[httpx.Response] = []
    # A kill can land between two requests (the replica holding none), so it is tried again.
    for _ in range(DYING_ATTEMPTS):
        killed, responses = kill_image_to_3d_during_burst(served, admin)
        failed = [response for response in responses if response.status_code != 200]
        for response in failed:
            assert response.status_code == 502, response.text
            assert response.json()["field"] == "image_to_3d"
            assert "image_to_3d" in response.json()["error"]
        # Requests the replica had not accepted yet were retried by Serve on its replacement.
        wait_for(lambda: post_json(served.url, TEXT).status_code == 200, 180, "a 200 after the replica restart", 1.0)
        assert admin.replica_pid("ImageTo3DDeployment") != killed
        if failed:
            break
    assert failed, f"no request was in the replica when it died, in {DYING_ATTEMPTS} attempts"


# -- 2 and 3. API key, back-pressure and timeout (a redeployed app) -----------------------------

API_KEY = f"key-{uuid.uuid4().hex}"
REQUEST_TIMEOUT_S = 4.0
REDEPLOY_TIMEOUT_S = 300


@pytest.fixture(scope="class")
def locked(served: ServedGraph) -> Iterator[ServeAdmin]:
    """The running app redeployed with an API key, one request in flight at most and a short timeout."""
    admin = ServeAdmin.from_log(served.log)

    def ready() -> bool:  # /health turns 200 once the ingress's warm-up job went through
        return httpx.get(f"{served.url}/health", timeout=10).status_code == 200

    pids = {name: admin.replica_pid(name) for name in ("TextToImageDeployment", "ImageTo3DDeployment", "Ingress")}
    settings = {"api_key": API_KEY, "max_in_flight": 1, "request_timeout_s": REQUEST_TIMEOUT_S}
    with redeployed(admin, lambda config: with_service(config, **settings), ready, REDEPLOY_TIMEOUT_S):
        # Service settings are the ingress's user_config: applied in place, no replica restarts.
        assert {name: admin.replica_pid(name) for name in pids} == pids
        yield admin


KEYED_ROUTES = [
    pytest.param({"method": "GET", "url": "/version"}, id="version"),
    pytest.param({"method": "POST", "url": "/generate", "json": TEXT}, id="json"),
    pytest.param({"method": "POST", "url": "/generate", "files": TEAPOT_FILE, "data": {"seed": "1"}}, id="404-gen"),
    pytest.param({"method": "POST", "url": "/generate/", "data": {"prompt": "a mug"}}, id="three-gen"),
    pytest.param({"method": "POST", "url": "/jobs", "json": TEXT}, id="jobs"),
    pytest.param({"method": "GET", "url": "/jobs/anything"}, id="job-status"),
    pytest.param({"method": "GET", "url": "/jobs/anything/files/asset.glb"}, id="job-file"),
    pytest.param({"method": "GET", "url": "/jobs/anything/events"}, id="job-events"),
]


@pytest.mark.usefixtures("locked")
class TestLockedDown:
    """API key, back-pressure and timeout on the redeployed app."""

    def test_health_needs_no_key(self, served: ServedGraph) -> None:
        assert httpx.get(f"{served.url}/health", timeout=TIMEOUT).json() == {"status": "ok"}

    @pytest.mark.parametrize("key", [None, "wrong"], ids=["missing-key", "wrong-key"])
    @pytest.mark.parametrize("route", KEYED_ROUTES)
    def test_other_routes_need_the_key(self, served: ServedGraph, route: dict, key: str | None) -> None:
        headers = {} if key is None else {"X-API-Key": key}
        response = httpx.request(**{**route, "url": served.url + route["url"]}, headers=headers, timeout=TIMEOUT)
        assert response.status_code == 401, response.text
        assert response.json() == {"error": "missing or wrong API key", "field": "x-api-key"}

    def test_docs_and_schema_stay_public_and_declare_the_key(self, served: ServedGraph) -> None:
        assert httpx.get(f"{served.url}/docs", timeout=TIMEOUT).status_code == 200
        schema = httpx.get(f"{served.url}/openapi.json", timeout=TIMEOUT).json()
        assert schema["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/GenerateRequest"}
        assert "faces" in schema["components"]["schemas"]["GenerateRequest"]["properties"]

    def test_right_key_is_accepted(self, served: ServedGraph) -> None:
        headers = {"X-API-Key": API_KEY}
        assert httpx.get(f"{served.url}/version", headers=headers, timeout=TIMEOUT).json()["mode"] == "tiny"
        schema = httpx.get(f"{served.url}/openapi.json", headers=headers, timeout=TIMEOUT).json()
        assert {"/generate", "/generate/", "/health"} <= set(schema["paths"])
        assert_glb(post_json(served.url, TEXT, headers))

    def test_full_service_answers_503_and_timeout_504_frees_the_slot(self, served: ServedGraph, locked) -> None:
        headers = {"X-API-Key": API_KEY}
        pid = locked.replica_pid("ImageTo3DDeployment")
        os.kill(pid, signal.SIGSTOP)  # the first request now waits in the graph until its timeout
        try:
            with ThreadPoolExecutor(1) as pool:
                start = time.monotonic()
                first = pool.submit(post_json, served.url, TEXT, headers)
                time.sleep(1.0)
                second_start = time.monotonic()
                second = post_json(served.url, TEXT, headers)
                second_s = time.monotonic() - second_start
                first_response, first_s = first.result(), time.monotonic() - start
        finally:
            os.kill(pid, signal.SIGCONT)
        assert second.status_code == 503, second.text
        assert second_s < 1.0
        assert second.headers["retry-after"] == str(ServiceConfig().retry_after_s)
        assert second.json()["error"].startswith("busy")
        assert first_response.status_code == 504, first_response.text
        assert first_response.json()["error"] == f"request exceeded the {REQUEST_TIMEOUT_S:g} s timeout"
        assert REQUEST_TIMEOUT_S <= first_s < REQUEST_TIMEOUT_S + 5
        assert_glb(post_json(served.url, TEXT, headers))
