"""What a failure means to a client: its HTTP status, message and field, in one place.

The HTTP edge answers with it, and a failed job stores the same ``{"error", "field"}`` body, so
a job and ``/generate`` report one failure the same way.
"""

import dataclasses
import logging
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from gen3d.errors import InputError, StageOutputError
from gen3d.service.answers import ErrorBody

logger = logging.getLogger(__name__)

STAGE_DEPLOYMENTS = {
    "TextToImageDeployment": "text_to_image",
    "BackgroundDeployment": "background",
    "ImageTo3DDeployment": "image_to_3d",
    "ExportDeployment": "export",
    "SharedState": "shared_state",
}


class StageTimeout(Exception):
    """The graph did not answer within the request's time limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request exceeded the {seconds:g} s timeout")


class ServiceBusy(Exception):
    """No capacity now (stage queue, in-flight limit, job store, or shutting down); retry later.

    Attributes:
        retry_after_s: the ``Retry-After`` value.
    """

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ErrorReply:
    """A failure as the client sees it.

    Attributes:
        status: HTTP status.
        error: the message.
        field: the request field or stage it concerns, or None.
        headers: extra headers (``Retry-After``).
    """

    status: int
    error: str
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, str | None]:
        """The shared error body (``gen3d.service.answers.ErrorBody``, as the OpenAPI document says)."""
        return ErrorBody(error=self.error, field=self.field).model_dump()


def error_response(reply: ErrorReply) -> JSONResponse:
    """The one error shape every route answers with (API routes and static files alike)."""
    return JSONResponse(reply.body(), status_code=reply.status, headers=reply.headers)


def failed_stage(exc: BaseException) -> str:
    """Name the stage a Ray failure came from (a dead replica's error names its deployment)."""
    text = str(exc)
    for deployment, stage in STAGE_DEPLOYMENTS.items():
        if deployment in text:
            return stage
    return "unknown"


def describe(exc: BaseException) -> ErrorReply:
    """Map any exception raised while serving a request to what the client is told.

    Bad input is the client's (4xx, its field named); an unusable model result is 422 on the
    image; no capacity is 503 with ``Retry-After``; a dead or failing stage is 502 naming it;
    anything else is our bug, 500.
    """
    if isinstance(exc, InputError):
        return ErrorReply(exc.status, exc.message, exc.field)
    if isinstance(exc, StageTimeout):
        return ErrorReply(504, str(exc))
    if isinstance(exc, ServiceBusy):
        return ErrorReply(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, StageOutputError):
        # Raised in a stage, it arrives wrapped by Ray: report the stage's message, not Ray's traceback.
        return ErrorReply(422, f"no usable 3D result: {getattr(exc, 'cause', exc)}", "image")
    stage = failed_stage(exc)
    logger.error("request failed in stage %s: %s", stage, type(exc).__name__)
    status = 500 if stage == "unknown" else 502
    return ErrorReply(status, f"stage {stage} failed: {type(exc).__name__}", stage)
