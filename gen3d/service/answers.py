"""The API's answers as typed models: the bodies the routes return, the OpenAPI document describes
and ``gen3d.client`` parses (``ErrorBody`` is also every failed job's ``error``)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from gen3d.formats import OutputFormat
from gen3d.service.job_store.records import JobStatus


class ErrorBody(BaseModel):
    """Every refusal and every failed job: the message, and the request field (or stage) it concerns."""

    error: str
    field: str | None


class JobAccepted(BaseModel):
    """``POST /jobs``: the new job's id and where to poll it."""

    id: str
    status_url: str


class AssetInfo(BaseModel):
    """A finished job's asset, before downloading it."""

    bytes: int
    faces: int | None = Field(description="Triangle count of a mesh; null for a splat.")
    media_type: str
    filename: str


class JobView(BaseModel):
    """``GET /jobs/{id}`` and each event of ``/jobs/{id}/events``."""

    id: str
    status: JobStatus
    stage: str | None = Field(description="The stage running now; null once finished.")
    timings: dict[str, float] = Field(description="Seconds per finished stage.")
    error: ErrorBody | None = Field(description="Why the job failed (the body a request would have got).")
    files: dict[Literal["image", "cutout", "asset"], str] = Field(description="URLs of the files made so far.")
    asset: AssetInfo | None


class Health(BaseModel):
    """``GET /health`` once the service is ready."""

    status: Literal["ok"]


class VersionInfo(BaseModel):
    """``GET /version``: what this service runs and what requests may ask of it."""

    version: str
    mode: str
    model: Literal["triposr", "trellis"] = Field(description="The image-to-3D model that makes the assets.")
    allowed_sizes: list[int]
    allowed_steps: list[int]
    formats: list[OutputFormat]
    mesh_options: dict[str, dict[str, Any]] = Field(description="Each mesh option's range or choices, and default.")
    sampler_options: dict[str, dict[str, Any]] = Field(
        description="TRELLIS's sampler options with their ranges and defaults (empty for TripoSR)."
    )
    weights: dict[str, dict[str, Any]] = Field(description="Each stage's weights and their pins.")
