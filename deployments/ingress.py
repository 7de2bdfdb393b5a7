"""The HTTP edge: routes, wire parsing and error mapping. The pipeline does the rest.

Three routes produce assets at once: our JSON ``POST /generate``, 404-gen's multipart
``POST /generate`` (``prompt_image_file`` + ``seed``, -Y splat) and three-gen's ``POST /generate/``
(form ``prompt``, +Y splat). ``POST /jobs`` takes the JSON body of ``/generate`` and answers at
once; ``/jobs/{id}`` reports the stage timeline and serves the image, the cut-out and the asset.
Every rejection is JSON ``{"error", "field"}``.
"""

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments._runtime import route_logs_to_serve
from deployments.errors import (
    ErrorReply,
    ServiceBusy,
    StageTimeout,
    describe,
    error_response,
)
from deployments.openapi import openapi_document
from deployments.pipeline import Pipeline, StageHandles
from deployments.web import STUDIO_PROBLEM, swagger_ui_html
from deployments.web import router as web_router
from gen3d import __version__
from gen3d.config import ShapeModel, TextToImageConfig
from gen3d.errors import InputError, StageOutputError
from gen3d.formats import MeshLimits, MeshOptions
from gen3d.imaging import mib
from gen3d.results import ExportedFile, Traced
from gen3d.service.answers import Health, JobAccepted, JobView, VersionInfo
from gen3d.service.api import (
    FORM_PROMPT_FIELDS,
    IMAGE_FILE_FIELDS,
    OUTPUT_FORMATS,
    GenerateRequest,
    Job,
    JobDefaults,
    ServiceConfig,
    check_form_fields,
    first_validation_error,
    job_from_form_prompt,
    job_from_image_file,
    job_from_request,
    parse_form_seed,
    server_timing,
)
from gen3d.service.job_store import FINISHED, StoreUnavailable, UnknownJob, file_key
from gen3d.service.launcher import ADMIN_TOKEN_ENV
from gen3d.service.request_schema import mesh_option_ranges, sampler_option_ranges

logger = logging.getLogger(__name__)

#: How long one server-sent-event wait lasts before a keep-alive comment.
EVENT_WAIT_S = 15.0
#: How long a job route waits for an unavailable job store (its replica restarting) before a 503.
STORE_PATIENCE_S = 5.0
#: Seconds between drain-board heartbeats: how fast every replica sees a drain.
HEARTBEAT_S = 0.25

app = FastAPI(
    title="gen3d",
    version=__version__,
    description=(
        "Text or image to 3D asset: GLB/OBJ/PLY mesh or a validator-ready Gaussian-splat PLY. Every refusal is "
        "JSON `{\"error\", \"field\"}`; any other method on a listed path answers 405 with `Allow`."
    ),
    redirect_slashes=False,
    # operationId = the route function's name: the document's links and clients name operations by it.
    generate_unique_id_function=lambda route: route.name,
    # Served by Ingress routes below (public), with Swagger UI from local files, not a CDN.
    docs_url=None,
    openapi_url=None,
)
# The studio page and its pinned static files: public, they hold no secret (the page asks for the key).
app.include_router(web_router)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    detail = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    field = ".".join(str(part) for part in detail["loc"] if part != "body") or "body"
    return error_response(ErrorReply(422, detail["msg"], field))


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(ErrorReply(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None) or {}))


async def _known_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(describe(exc))


# Expected failures get their own handlers: Starlette re-raises whatever reaches the catch-all
# ``Exception`` handler after answering, which would log a client's bad input as a server error.
for _expected in (InputError, StageOutputError, StageTimeout, ServiceBusy):
    app.add_exception_handler(_expected, _known_error)
app.add_exception_handler(Exception, _known_error)


def media_type(request: Request) -> str:
    """The request's content type without parameters (``multipart/form-data; boundary=...``), lower-case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def asset_response(result: Traced, elapsed_s: float, model: str) -> Response:
    """File bytes with their media type, a download name, per-stage and total ``Server-Timing``, and
    the image-to-3D model that made them (``X-Model``)."""
    exported: ExportedFile = result.value
    headers = {
        "Server-Timing": server_timing({**result.timings, "total": elapsed_s}),
        "Content-Disposition": f'attachment; filename="asset.{exported.extension}"',
        "X-Model": model,
    }
    if exported.faces is not None:
        headers["X-Faces"] = str(exported.faces)
    return Response(exported.data, media_type=exported.media_type, headers=headers)


def job_view(view: dict[str, Any]) -> dict[str, Any]:
    """The store's view of a job with its files as URLs (``GET /jobs/{id}``)."""
    base = f"/jobs/{view['id']}/files"
    files = {file_key(name): f"{base}/{name}" for name in view["files"]}
    return {**{k: v for k, v in view.items() if k != "version"}, "files": files}


# Everything the Ingress uses is defined above it: @serve.ingress pickles the app and the class
# by value when the class is decorated, so later handlers and names would be missing in the replica.
@serve.deployment(max_ongoing_requests=256, graceful_shutdown_timeout_s=60)
@serve.ingress(app)
class Ingress:
    """The HTTP entry of the graph.

    Args:
        text_to_image, background, image_to_3d, export: handles of the stage deployments.
        state: handle of the shared state (job store and drain board).
        text_to_image_config: the preset's text settings (defaults and allowed values).
        mesh_defaults: the preset's mesh option defaults (``MeshOptions`` fields).
        weights: each stage's weights and their pins (``Preset.weights``), for ``GET /version``.
        mesh_limits: what requests' mesh options may ask for (``Preset.mesh_limits``).
        shape_model: the 3D model and its sampler's limits (``Preset.shape_model``).

    Its ``user_config`` is a ``ServiceConfig`` (limits, API key, time-outs): changing it
    reconfigures this replica in place, and no model replica restarts.
    """

    def __init__(
        self,
        text_to_image: DeploymentHandle,
        background: DeploymentHandle,
        image_to_3d: DeploymentHandle,
        export: DeploymentHandle,
        state: DeploymentHandle,
        text_to_image_config: dict[str, Any],
        mesh_defaults: dict[str, Any],
        weights: dict[str, dict[str, Any]],
        mesh_limits: dict[str, Any],
        shape_model: dict[str, Any],
    ) -> None:
        route_logs_to_serve()
        if STUDIO_PROBLEM:
            logger.warning("%s", STUDIO_PROBLEM)
        self.weights = weights
        text = TextToImageConfig.model_validate(text_to_image_config)
        self.defaults = JobDefaults(
            text, MeshOptions(**mesh_defaults), MeshLimits(**mesh_limits), ShapeModel(**shape_model)
        )
        self.service = ServiceConfig()
        handles = StageHandles(text_to_image, background, image_to_3d, export, state)
        self.pipeline = Pipeline(handles, self.defaults, self.service)
        self.replica = serve.get_replica_context().replica_id.unique_id
        loop = asyncio.get_running_loop()
        self._warm_up = loop.create_task(self.pipeline.warm_up())
        self._heartbeat = loop.create_task(self._beat())

    def reconfigure(self, service: dict[str, Any]) -> None:
        """Apply a new ``ServiceConfig`` (Serve calls this with the deployment's ``user_config``)."""
        self.service = ServiceConfig.model_validate(service)
        self.pipeline.reconfigure(self.service)
        logger.info("service settings applied (api key %s)", "set" if self.service.api_key else "off")

    async def __del__(self) -> None:
        # Serve calls this when it stops the replica (redeploy, scale-down): refuse new work with
        # 503 and let the jobs in flight finish. A full shutdown drains first: gen3d.service.launcher.
        await self.pipeline.drain()

    async def _beat(self) -> None:
        """Tell the drain board what this replica holds; start draining when it says so."""
        while True:
            try:
                drain = await self.pipeline.handles.state.heartbeat.remote(self.replica, self.pipeline.in_flight)
                if drain and not self.pipeline.admission.draining:
                    logger.info("drain requested: refusing new work, %d in flight", self.pipeline.admission.in_flight)
                    self.pipeline.admission.start_drain()
            except Exception as exc:  # the shared state restarting must not stop the beat
                logger.warning("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(HEARTBEAT_S)

    # -- routes -----------------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> JSONResponse:
        """Readiness (no API key needed): 503 until the start-up warm-up jobs have gone through."""
        if not self._warm_up.done():
            return error_response(ErrorReply(503, "warming up", headers={"Retry-After": "1"}))
        if self.pipeline.admission.draining:
            return error_response(ErrorReply(503, "shutting down", headers={"Retry-After": "1"}))
        return JSONResponse(Health(status="ok").model_dump())

    @app.get("/version")
    async def version(self, request: Request) -> VersionInfo:
        """Service version, its 3D model, the limits requests are checked against, the option ranges and
        the weights' pins."""
        self._authorise(request)
        text = self.defaults.text
        return VersionInfo(
            version=__version__,
            mode=text.mode,
            model=self.defaults.shape.name,
            allowed_sizes=text.allowed_sizes,
            allowed_steps=text.allowed_steps,
            formats=list(OUTPUT_FORMATS),
            mesh_options=mesh_option_ranges(self.defaults),
            sampler_options=sampler_option_ranges(self.defaults),
            weights=self.weights,
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(self) -> JSONResponse:
        """The API's description as configured now (public: it holds no secret, only says where the key goes)."""
        return JSONResponse(openapi_document(app, self.defaults, self.service))

    @app.get("/docs", include_in_schema=False)
    async def docs(self) -> HTMLResponse:
        """Swagger UI from the pinned local files; its Authorize button takes the API key."""
        return swagger_ui_html("/openapi.json", "gen3d API")

    @app.post("/generate")
    async def generate(self, request: Request) -> Response:
        """JSON ``GenerateRequest`` -> the asset file; or 404-gen's multipart ``prompt_image_file`` + ``seed``."""
        self._authorise(request)
        content_type = media_type(request)
        if content_type == "application/json":
            job = job_from_request(await self._json_body(request), self.defaults, self.service)
        elif content_type == "multipart/form-data":
            job = await self._multipart_job(request)
        else:
            raise InputError(
                "content-type",
                f"expected application/json or multipart/form-data, got {content_type or 'none'}",
                status=415,
            )
        return await self._asset(job)

    @app.post("/generate/")
    async def generate_form(self, request: Request) -> Response:
        """three-gen's generator protocol: form field ``prompt`` (text or base64 image) -> +Y splat."""
        self._authorise(request)
        form = await self._form(request)
        prompt = form.get("prompt")
        if not isinstance(prompt, str):
            raise InputError("prompt", "form field 'prompt' (text or base64 image) is required")
        check_form_fields(form.keys(), FORM_PROMPT_FIELDS)
        return await self._asset(job_from_form_prompt(prompt, self.defaults, self.service))

    async def _asset(self, job: Job) -> Response:
        start = time.perf_counter()
        result = await self.pipeline.run(job)
        return asset_response(result, time.perf_counter() - start, self.defaults.shape.name)

    @app.post("/jobs", status_code=202)
    async def submit_job(self, request: Request) -> JSONResponse:
        """The JSON body of ``POST /generate``; answers 202 with the job's id and status URL."""
        self._authorise(request)
        if media_type(request) != "application/json":
            raise InputError("content-type", f"expected application/json, got {media_type(request) or 'none'}", 415)
        body = await self._json_body(request)
        job_id = await self.pipeline.jobs.submit(body, job_from_request(body, self.defaults, self.service))
        return JSONResponse(JobAccepted(id=job_id, status_url=f"/jobs/{job_id}").model_dump(), status_code=202)

    @app.get("/jobs/{job_id}")
    async def job_status(self, job_id: str, request: Request) -> JobView:
        """Status, running stage, per-stage seconds, error and file URLs of one job."""
        self._authorise(request)
        return JobView.model_validate(job_view(await self._job_call("view", job_id)))

    @app.get("/jobs/{job_id}/files/{name}")
    async def job_file(self, job_id: str, name: str, request: Request) -> Response:
        """``image.png``, ``cutout.png`` or ``asset.<ext>`` of a job."""
        self._authorise(request)
        stored = await self._job_call("file", job_id, name)
        headers = {"Content-Disposition": f'inline; filename="{name}"'}
        return Response(stored.data, media_type=stored.media_type, headers=headers)

    @app.get("/jobs/{job_id}/events")
    async def job_events(self, job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: the job's state once now and once per stage transition, until it ends."""
        self._authorise(request)
        first = await self._job_call("view", job_id)
        return StreamingResponse(self._events(first), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/admin/drain", include_in_schema=False)
    async def start_drain(self, request: Request) -> dict[str, Any]:
        """The launcher's graceful stop: every replica refuses new work; answers the drain status."""
        self._authorise_admin(request)
        return await self.pipeline.handles.state.start_drain.remote()

    @app.get("/admin/drain", include_in_schema=False)
    async def drain_status(self, request: Request) -> dict[str, Any]:
        """Work still in flight over all replicas; ``settled`` once it is safe to stop Serve."""
        self._authorise_admin(request)
        return await self.pipeline.handles.state.drain_status.remote()

    # -- request decoding -------------------------------------------------------------------

    def _authorise_admin(self, request: Request) -> None:
        # The launcher's secret (in the environment it gives Serve); without it the routes are 404.
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if not token or not hmac.compare_digest(request.headers.get("x-admin-token", ""), token):
            raise StarletteHTTPException(404, "Not Found")

    def _authorise(self, request: Request) -> None:
        key = self.service.api_key
        if key is not None and not hmac.compare_digest(request.headers.get("x-api-key", ""), key):
            raise InputError("x-api-key", "missing or wrong API key", status=401)

    def _body_limit(self) -> int:
        # base64 inflates by 4/3, and a form carries a little framing around the file.
        return self.service.max_upload_bytes * 4 // 3 + 64 * 1024

    def _check_body_length(self, length: int) -> None:
        if length > self._body_limit():
            raise InputError(
                "body",
                f"is over {mib(self._body_limit())}: the upload limit is {mib(self.service.max_upload_bytes)} "
                "of image, about a third more as base64 (service setting max_upload_bytes)",
                status=413,
            )

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
        check_form_fields(form.keys(), IMAGE_FILE_FIELDS)
        seed = parse_form_seed(form.get("seed", "0"))
        return job_from_image_file(await upload.read(), seed, self.defaults, self.service)

    # -- jobs ---------------------------------------------------------------------------------

    async def _job_call(self, method: str, job_id: str, *args: Any) -> Any:
        """A job store call; an unknown or expired job (or file) answers 404, a store that stays
        unavailable for ``STORE_PATIENCE_S`` 503."""
        try:
            return await self.pipeline.store.call(method, job_id, *args, patience_s=STORE_PATIENCE_S)
        except UnknownJob:
            raise InputError("id", f"no job {job_id!r} (unknown, or expired), or no such file", status=404) from None
        except StoreUnavailable as exc:
            raise ServiceBusy(str(exc), self.service.retry_after_s) from None

    async def _events(self, view: dict[str, Any]) -> AsyncIterator[str]:
        """Yield ``data:`` events until the job is done or failed; comments keep the line alive
        (also while the store is unavailable)."""
        yield f"data: {json.dumps(job_view(view))}\n\n"
        while view["status"] not in FINISHED:
            try:
                latest = await self._job_call("wait_for_change", view["id"], view["version"], EVENT_WAIT_S)
            except ServiceBusy:
                yield ": job store unavailable; retrying\n\n"
                await asyncio.sleep(self.service.retry_after_s)
                continue
            if (latest["version"], latest["status"]) == (view["version"], view["status"]):
                yield ": keep-alive\n\n"
                continue
            view = latest
            yield f"data: {json.dumps(job_view(view))}\n\n"
