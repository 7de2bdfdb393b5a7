"""A small typed client of the gen3d HTTP API: ``from gen3d.client import Client``.

It speaks the service's own models (``gen3d.service.api``): a ``GenerateRequest`` goes out;
``Health``, ``VersionInfo``, ``JobAccepted`` and ``JobView`` come back, and every refusal raises
``ApiError`` with the service's ``ErrorBody``. A 503 (full, starting, shutting down) is retried
after its ``Retry-After``, a bounded number of times and never longer than ``MAX_RETRY_WAIT_S``
per wait.

    with Client("http://127.0.0.1:8093") as client:
        asset = client.generate(GenerateRequest(prompt="a red chair", format="glb"))
        job = client.submit(GenerateRequest(prompt="a brass lamp"))
        for view in client.events(job.id):   # the job now, then at every stage transition
            print(view.status, view.stage)
"""

import email.utils
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
from pydantic import ValidationError

from gen3d.service.answers import ErrorBody, Health, JobAccepted, JobView, VersionInfo
from gen3d.service.api import GenerateRequest, parse_server_timing

# The service's models travel with the client: ``from gen3d.client import Client, GenerateRequest``.
__all__ = [
    "ApiError", "Asset", "Client", "ErrorBody", "GenerateRequest", "Health", "JobAccepted", "JobView", "VersionInfo",
]  # fmt: skip

DEFAULT_URL = "http://127.0.0.1:8093"
#: 503s retried before giving up, and the longest single wait (a larger Retry-After is capped).
DEFAULT_RETRIES = 5
MAX_RETRY_WAIT_S = 30.0
#: Wait when a 503 carries no usable Retry-After, or when nothing answers yet.
FALLBACK_RETRY_WAIT_S = 2.0


class ApiError(Exception):
    """The service refused a request or failed it.

    Attributes:
        status: the HTTP status.
        body: the service's ``{"error", "field"}`` (for a body of another shape: its text as ``error``).
        retry_after: the ``Retry-After`` header (503s), or None.
    """

    def __init__(self, status: int, body: ErrorBody, retry_after: str | None = None) -> None:
        field = f" (field {body.field})" if body.field else ""
        super().__init__(f"error {status}{field}: {body.error}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


@dataclass(frozen=True)
class Asset:
    """A generated file.

    Attributes:
        data: the file's bytes.
        media_type: its media type (``model/gltf-binary``...).
        timings: seconds per stage and ``total``, from ``Server-Timing``.
        faces: the mesh's triangle count; None for a splat.
    """

    data: bytes
    media_type: str
    timings: dict[str, float]
    faces: int | None


def retry_after_s(header: str | None, now: datetime | None = None) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), capped.

    Returns:
        A wait in [0, MAX_RETRY_WAIT_S]; ``FALLBACK_RETRY_WAIT_S`` when the header is absent or unreadable.
    """
    if not header:
        return FALLBACK_RETRY_WAIT_S
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return FALLBACK_RETRY_WAIT_S
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_S)


def error_of(response: httpx.Response) -> ApiError:
    """The ``ApiError`` of an error answer (read already)."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        body = ErrorBody(error=response.text[:500] or response.reason_phrase, field=None)
    return ApiError(response.status_code, body, response.headers.get("retry-after"))


def parse_events(lines: Iterable[str]) -> Iterator[JobView]:
    """Each server-sent event's ``data`` as a ``JobView``; comments (keep-alives) are skipped."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield JobView.model_validate_json("\n".join(data))
            data = []
    if data:
        yield JobView.model_validate_json("\n".join(data))


class Client:
    """The gen3d API over HTTP.

    Args:
        url: the service's base URL.
        api_key: sent as ``X-API-Key`` when given (the service's ``api_key``).
        timeout: seconds per HTTP request (an event stream waits at most 15 s between lines).
        retries: 503s retried per call.
        sleep: waits between retries (tests pass a recorder).
        on_retry: told ``(attempt, retries, wait_s)`` before each retry (the CLI prints it).
        transport: an httpx transport (tests).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = DEFAULT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int, int, float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries
        self.sleep = sleep
        self.on_retry = on_retry or (lambda attempt, retries, wait: None)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the API ----------------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health`` once; ``ApiError`` 503 while the service warms up or shuts down."""
        with self._open("GET", "/health", retry=False) as response:
            return Health.model_validate_json(response.read())

    def wait_until_ready(self, timeout_s: float) -> Health:
        """``GET /health`` until it answers 200, honouring each 503's ``Retry-After``.

        Raises:
            ApiError: the last 503, or httpx.TransportError (nothing answers), once the next
                wait would end past ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.health()
            except ApiError as error:
                if error.status != 503:
                    raise
                failure, wait = error, retry_after_s(error.retry_after)
            except httpx.TransportError as error:
                failure, wait = error, FALLBACK_RETRY_WAIT_S
            if time.monotonic() + wait > deadline:
                raise failure
            self.sleep(wait)

    def version(self) -> VersionInfo:
        """``GET /version``: what the service runs and what requests may ask of it."""
        return VersionInfo.model_validate_json(self._send("GET", "/version"))

    def generate(self, request: GenerateRequest) -> Asset:
        """``POST /generate``: the asset file, with its stage timings."""
        with self._open("POST", "/generate", json=request.model_dump(mode="json", exclude_unset=True)) as response:
            data = response.read()
        faces = response.headers.get("x-faces")
        return Asset(
            data=data,
            media_type=response.headers.get("content-type", ""),
            timings=parse_server_timing(response.headers.get("server-timing", "")),
            faces=int(faces) if faces else None,
        )

    def submit(self, request: GenerateRequest) -> JobAccepted:
        """``POST /jobs``: the new job's id at once."""
        body = request.model_dump(mode="json", exclude_unset=True)
        return JobAccepted.model_validate_json(self._send("POST", "/jobs", json=body))

    def job(self, job_id: str) -> JobView:
        """``GET /jobs/{id}``: the job now."""
        return JobView.model_validate_json(self._send("GET", f"/jobs/{job_id}"))

    def file(self, job_id: str, name: str) -> bytes:
        """``GET /jobs/{id}/files/{name}``: ``image.png``, ``cutout.png`` or ``asset.<ext>`` of a job."""
        return self._send("GET", f"/jobs/{job_id}/files/{name}")

    def events(self, job_id: str) -> Iterator[JobView]:
        """``GET /jobs/{id}/events``: the job now, then at every stage transition, until it is done or failed."""
        with self._open("GET", f"/jobs/{job_id}/events") as response:
            yield from parse_events(response.iter_lines())

    # -- HTTP -------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: object) -> bytes:
        with self._open(method, path, **kwargs) as response:
            return response.read()

    @contextmanager
    def _open(self, method: str, path: str, retry: bool = True, **kwargs: object) -> Iterator[httpx.Response]:
        """The streamed answer of one call; a 503 is retried after its ``Retry-After`` (``retries``
        times at most, unless ``retry`` is off), and an error answer raises ``ApiError``."""
        attempt = 0
        while True:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code == 503 and retry and attempt < self.retries:
                    wait = retry_after_s(response.headers.get("retry-after"))
                elif response.is_error:
                    response.read()
                    raise error_of(response)
                else:
                    yield response
                    return
            attempt += 1
            self.on_retry(attempt, self.retries, wait)
            self.sleep(wait)
