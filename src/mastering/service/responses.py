"""Response bodies of the HTTP API, as pydantic models.

The routes declare them, so Powertools checks every answer against them and the
OpenAPI document (GET /openapi.json) describes exactly what is sent. The domain
builds plain dicts (``jobs.rules.job_view`` is also the webhook's ``data``); these
models are the contract those dicts must keep.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field

from mastering.errors import ErrorCode


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Body):
    code: ErrorCode
    message: str


class ErrorBody(_Body):
    error: ErrorDetail


class UploadForm(_Body):
    """A presigned POST: send ``fields`` and then the file as multipart form data."""

    url: str
    fields: dict[str, str]
    expires_at: str


class JobCreated(_Body):
    job_id: str
    status: str
    uploads: dict[str, UploadForm] = Field(description="By role: target, and reference if any")


class Progress(_Body):
    stage: str
    percent: int = Field(ge=0, le=100)


class ResultFile(_Body):
    url: str
    expires_at: str
    size: int
    lufs: float | None
    true_peak_dbtp: float | None


class WarningNote(_Body):
    code: str
    message: str


class ResolvedOptions(_Body):
    loudness: str | float
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    intensity: float
    limiter: str


class JobError(_Body):
    code: str
    message: str


class TrackMeasurements(_Body):
    """One file's meters (null where undefined, e.g. the loudness of silence)."""

    lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None
    bands_db: list[float | None]


class Analysis(_Body):
    target: TrackMeasurements
    reference: TrackMeasurements | None = None
    result: TrackMeasurements | None = None
    band_centres_hz: list[float]


class JobView(_Body):
    """GET /jobs/{job_id}, POST /jobs/{job_id}/cancel, and the webhook's ``data``."""

    job_id: str
    status: str
    progress: Progress
    created_at: str
    updated_at: str
    error: JobError | None
    results: dict[str, ResultFile]
    # Numbers measured by the run (duration_s, target_lufs, ..., processing_s).
    metrics: dict[str, float | None] | None
    metadata: dict[str, Any]
    mastering: ResolvedOptions
    warnings: list[WarningNote]
    mode: str
    previews: bool
    analysis: Analysis | None


class JobSummary(_Body):
    job_id: str
    status: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    error: JobError | None


class JobList(_Body):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class PresetInfo(_Body):
    id: str
    name: str
    description: str
    loudness_lufs: float
    true_peak_dbtp: float


class LoudnessTarget(_Body):
    id: str
    name: str
    loudness_lufs: float


class PresetList(_Body):
    presets: list[PresetInfo]
    loudness_targets: list[LoudnessTarget]


class Health(_Body):
    status: str
    service: str
    version: str
    engine: str


def error_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    described = {
        400: "The request is invalid (invalid_request, naming the field; unknown_preset)",
        401: "Missing or wrong X-Api-Key",
        404: "No such job for this owner",
        409: "The job has already ended (job_finished)",
        413: "A declared file is larger than allowed (file_too_large)",
        415: "A declared file is not a supported audio format (unsupported_format)",
        429: "The owner has too many live jobs (too_many_jobs)",
        500: "Something went wrong on our side (internal_error)",
    }
    return {
        status: {
            "description": described[status],
            "content": {"application/json": {"model": ErrorBody}},
        }
        for status in statuses
    }


def ok_response(model: type[BaseModel], description: str) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": model}}}


def empty_response(description: str) -> OpenAPIResponse:
    return {"description": description}
