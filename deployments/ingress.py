"""HTTP ingress: validates requests, chains the stage handles without awaiting in between.

Three routes produce assets: our JSON ``POST /generate``, 404-gen's multipart ``POST /generate``
(``prompt_image_file`` + ``seed``, -Y splat) and three-gen's ``POST /generate/`` (form ``prompt``,
+Y splat). Every rejection is JSON ``{"error", "field"}`` with a 4xx status.
"""

import asyncio
import hmac
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments._runtime import route_logs_to_serve
from gen3d import __version__
from gen3d.api import (
    OUTPUT_FORMATS,
    GenerateRequest,
    Job,
    ServiceConfig,
    first_validation_error,
    job_from_form_prompt,
    job_from_image_file,
    job_from_request,
    server_timing,
)
from gen3d.config import TextToImageConfig
from gen3d.errors import InputError, StageOutputError
from gen3d.results import ExportedFile, Traced

logger = logging.getLogger(__name__)

WARM_UP_RETRY_S = 5.0
STAGE_DEPLOYMENTS = {
    "TextToImageDeployment": "text_to_image",
    "BackgroundDeployment": "background",
    "ImageTo3DDeployment": "image_to_3d",
    "ExportDeployment": "export",
}

app = FastAPI(
    title="gen3d",
    version=__version__,
    description="Text or image to 3D asset: GLB/OBJ/PLY mesh or a validator-ready Gaussian-splat PLY.",
    redirect_slashes=False,
    # Served by Ingress routes below, so that the API key guards them like every route but /health.
    docs_url=None,
    openapi_url=None,
)


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    """The one error shape every route answers with."""
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


@app.exception_handler(InputError)
async def _input_error(_: Request, exc: InputError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.field)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    detail = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    field = ".".join(str(part) for part in detail["loc"] if part != "body") or "body"
    return error_response(422, detail["msg"], field)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def media_type(request: Request) -> str:
    """The request's content type without parameters (``multipart/form-data; boundary=...``), lower-case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def failed_stage(exc: BaseException) -> str:
    """Name the stage a Ray failure came from (a dead replica's error names its deployment)."""
    text = str(exc)
    for deployment, stage in STAGE_DEPLOYMENTS.items():
        if deployment in text:
            return stage
    return "unknown"


def asset_response(result: Traced, elapsed: float) -> Response:
    """File bytes with their media type, a download name and per-stage ``Server-Timing``."""
    exported: ExportedFile = result.value
    timings = {**result.timings, "total": elapsed}
    headers = {
        "Server-Timing": server_timing(timings),
        "Content-Disposition": f'attachment; filename="asset.{exported.extension}"',
    }
    return Response(exported.data, media_type=exported.media_type, headers=headers)


class StageTimeout(Exception):
    """The graph did not answer within the request timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request exceeded the {seconds:g} s timeout")


class StageBusy(Exception):
    """A stage's queue is full; ``retry_after_s`` goes into the ``Retry-After`` header."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("a stage queue is full; retry later")
        self.retry_after_s = retry_after_s


@app.exception_handler(StageTimeout)
async def _timeout(_: Request, exc: StageTimeout) -> JSONResponse:
    return error_response(504, str(exc))


@app.exception_handler(StageBusy)
async def _busy(_: Request, exc: StageBusy) -> JSONResponse:
    return error_response(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


@app.exception_handler(StageOutputError)
async def _bad_output(_: Request, exc: StageOutputError) -> JSONResponse:
    # Raised in a stage, it arrives wrapped by Ray: report the stage's message, not Ray's traceback.
    cause = getattr(exc, "cause", exc)
    return error_response(422, f"no usable 3D result: {cause}", "image")


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    stage = failed_stage(exc)
    logger.error("request failed in stage %s: %s", stage, type(exc).__name__)
    return error_response(500 if stage == "unknown" else 502, f"stage {stage} failed: {type(exc).__name__}", stage)


# Everything the Ingress uses is defined above it: @serve.ingress pickles the app and the class
# by value when the class is decorated, so later handlers and names would be missing in the replica.
@serve.deployment
@serve.ingress(app)
class Ingress:
    """The HTTP entry of the graph.

    Args:
        text_to_image, background, image_to_3d, export: handles of the stage deployments.
        text_to_image_config: the preset's text settings (defaults and allowed values).
        service: ``ServiceConfig`` as a mapping (limits, API key, timeouts).
    """

    def __init__(
        self,
        text_to_image: DeploymentHandle,
        background: DeploymentHandle,
        image_to_3d: DeploymentHandle,
        export: DeploymentHandle,
        text_to_image_config: dict[str, Any],
        service: dict[str, Any],
    ) -> None:
        route_logs_to_serve()
        self.text_to_image = text_to_image
        self.background = background
        self.image_to_3d = image_to_3d
        self.export = export
        self.text_cfg = TextToImageConfig.model_validate(text_to_image_config)
        self.service = ServiceConfig.model_validate(service)
        self.in_flight = 0
        self._warm_up = asyncio.get_running_loop().create_task(self._warm_graph())

    async def _warm_graph(self) -> None:
        """Send one job through every stage, so that the first client doesn't pay for setting up
        Serve's handles and routers (seconds on a fresh graph)."""
        cfg = self.text_cfg
        job = Job("warm-up", None, 0, cfg.steps, cfg.width, cfg.height, "splat", "+y")
        # Stage replicas may still be loading or compiling (minutes for fp8 FLUX): retry until the
        # job goes through, so /health turns ready only when every stage answers.
        while True:
            try:
                await self._run_graph(job)
                logger.info("graph warm-up finished")
                return
            except Exception as exc:
                logger.info("graph warm-up not through yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(WARM_UP_RETRY_S)

    # -- routes -----------------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> JSONResponse:
        """Readiness (no API key needed): 503 until the start-up warm-up job has gone through."""
        if not self._warm_up.done():
            return error_response(503, "warming up", headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version(self, request: Request) -> dict[str, Any]:
        """Service version and the text-to-image limits requests are checked against."""
        self._authorise(request)
        return {
            "version": __version__,
            "mode": self.text_cfg.mode,
            "allowed_sizes": self.text_cfg.allowed_sizes,
            "allowed_steps": self.text_cfg.allowed_steps,
            "formats": list(OUTPUT_FORMATS),
        }

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        self._authorise(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> HTMLResponse:
        self._authorise(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="gen3d API")

    @app.post("/generate")
    async def generate(self, request: Request) -> Response:
        """JSON ``GenerateRequest``, or 404-gen's multipart ``prompt_image_file`` + ``seed``."""
        self._authorise(request)
        content_type = media_type(request)
        if content_type == "application/json":
            job = job_from_request(await self._json_body(request), self.text_cfg, self.service)
        elif content_type == "multipart/form-data":
            job = await self._multipart_job(request)
        else:
            raise InputError(
                "content-type",
                f"expected application/json or multipart/form-data, got {content_type or 'none'}",
                status=415,
            )
        return await self._serve(job)

    @app.post("/generate/")
    async def generate_form(self, request: Request) -> Response:
        """three-gen's generator protocol: form field ``prompt`` (text or base64 image) -> +Y splat."""
        self._authorise(request)
        form = await self._form(request)
        prompt = form.get("prompt")
        if not isinstance(prompt, str):
            raise InputError("prompt", "form field 'prompt' (text or base64 image) is required")
        return await self._serve(job_from_form_prompt(prompt, self.text_cfg, self.service))

    # -- request decoding -------------------------------------------------------------------

    def _authorise(self, request: Request) -> None:
        key = self.service.api_key
        if key is not None and not hmac.compare_digest(request.headers.get("x-api-key", ""), key):
            raise InputError("x-api-key", "missing or wrong API key", status=401)

    def _check_body_length(self, length: int) -> None:
        if length > self._body_limit():
            raise InputError("body", f"is larger than the {self._body_limit()}-byte limit", status=413)

    def _check_declared_length(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            self._check_body_length(int(declared))

    async def _body(self, request: Request) -> bytes:
        self._check_declared_length(request)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            self._check_body_length(len(body))
        return bytes(body)

    def _body_limit(self) -> int:
        # base64 inflates by 4/3, and a form carries a little framing around the file.
        return self.service.max_upload_bytes * 4 // 3 + 64 * 1024

    async def _json_body(self, request: Request) -> GenerateRequest:
        body = await self._body(request)
        try:
            return GenerateRequest.model_validate_json(body)
        except ValidationError as exc:
            if any(err["type"] == "json_invalid" for err in exc.errors()):
                raise InputError("body", "is not valid UTF-8 JSON", status=400) from None
            raise first_validation_error(exc) from None

    async def _form(self, request: Request):
        content_type = media_type(request)
        if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise InputError("content-type", f"expected a form, got {content_type or 'none'}", status=415)
        self._check_declared_length(request)
        try:
            return await request.form(max_files=1, max_fields=8, max_part_size=self._body_limit())
        except StarletteHTTPException as exc:
            raise InputError("body", f"malformed form: {exc.detail}", status=400) from None

    async def _multipart_job(self, request: Request) -> Job:
        form = await self._form(request)
        upload = form.get("prompt_image_file")
        if upload is None or isinstance(upload, str):
            raise InputError("prompt_image_file", "multipart file field 'prompt_image_file' is required")
        seed_text = form.get("seed", "0")
        if not isinstance(seed_text, str) or not seed_text.strip().lstrip("-").isdigit():
            raise InputError("seed", f"expected an integer, got {seed_text!r}")
        data = await upload.read()
        return job_from_image_file(data, int(seed_text), self.text_cfg, self.service)

    # -- the graph --------------------------------------------------------------------------

    async def _serve(self, job: Job) -> Response:
        if self.in_flight >= self.service.max_in_flight:
            return error_response(
                503,
                f"busy: {self.in_flight} requests in flight; retry later",
                headers={"Retry-After": str(self.service.retry_after_s)},
            )
        self.in_flight += 1
        start = time.perf_counter()
        try:
            result = await self._run_graph(job)
        finally:
            self.in_flight -= 1
        return asset_response(result, time.perf_counter() - start)

    async def _run_graph(self, job: Job) -> Traced:
        """Chain the stages as ``DeploymentResponse``s; await only the last one, bounded in time."""
        if job.prompt is not None:
            source = self.text_to_image.generate.remote(job.prompt, job.seed, job.steps, job.width, job.height)
        else:
            source = Traced(job.image)
        prepared = self.background.process.remote(source)
        asset = self.image_to_3d.generate.remote(prepared, job.format == "splat")
        exported = self.export.export.remote(asset, job.format, job.up)
        try:
            return await asyncio.wait_for(exported, timeout=self.service.request_timeout_s)
        except TimeoutError:
            for response in (exported, asset, prepared, source):
                if hasattr(response, "cancel"):
                    response.cancel()
            raise StageTimeout(self.service.request_timeout_s) from None
        except (InputError, StageOutputError):
            raise
        except BackPressureError:
            raise StageBusy(self.service.retry_after_s) from None
