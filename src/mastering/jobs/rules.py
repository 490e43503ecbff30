"""Rules every writer of a job agrees on: how long a record lives, when a job is
overdue, how it expires, and how it looks to its client (GET /jobs/{id} and the
webhook show the same body)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Protocol

from mastering.config import Settings
from mastering.errors import ErrorCode
from mastering.formats import RESULT_SPECS, InputRole, OutputFormat, Preview, ResultName
from mastering.jobs.model import Job, JobStatus, Stage, iso

# After the master function's own timeout, how long before a job still queued or
# processing is declared dead by the sweep.
OVERDUE_GRACE_S = 120
EXPIRED_ERROR = {
    "code": str(ErrorCode.UPLOAD_EXPIRED),
    "message": "The uploads were not completed in time; create a new job",
}
# S3 hands an upload's event to the master function asynchronously, and Lambda keeps
# retrying a throttled one for up to six hours. A job whose files have all arrived is
# waiting for that event, not abandoned: it is only ended after this long.
UPLOAD_EVENT_MAX_AGE_S = 6 * 60 * 60
NEVER_PROCESSED_ERROR = {
    "code": str(ErrorCode.INTERNAL_ERROR),
    "message": "The files arrived but the job was never started; create a new job",
}


class ResultLinks(Protocol):
    """Presigned download links (``storage.objects.ObjectStorage`` is one)."""

    def presign_get(
        self, bucket: str, key: str, *, expires_s: int, download_name: str, content_type: str
    ) -> str: ...


class Transitions(Protocol):
    """The part of ``jobs.store.JobStore`` expiry needs."""

    def get(self, job_id: str) -> Job | None: ...

    def transition(
        self,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        now: datetime,
        stage: Stage,
        percent: int,
        error: dict[str, str] | None = None,
    ) -> Job | None: ...


def ttl_for(retention_days: int, moment: datetime) -> int:
    """When DynamoDB may delete a record last changed at ``moment`` (epoch seconds)."""
    return int((moment + timedelta(days=retention_days)).timestamp())


def upload_deadline(settings: Settings, created: datetime) -> int:
    """Epoch second after which a job still waiting for uploads expires."""
    return int((created + timedelta(seconds=settings.upload_window_s)).timestamp())


def processing_deadline(settings: Settings, started: datetime) -> int:
    """Epoch second after which a queued or processing job is dead (the sweep fails it)."""
    return int(started.timestamp()) + settings.master_timeout_s + OVERDUE_GRACE_S


def upload_window_over(job: Job, now: datetime) -> bool:
    return job.status is JobStatus.AWAITING_UPLOAD and now.timestamp() >= job.deadline_at


def live_since(settings: Settings, now: datetime) -> datetime:
    """No job created before this can still be live (for counting an owner's live jobs)."""
    longest = (
        settings.upload_window_s
        + UPLOAD_EVENT_MAX_AGE_S
        + settings.master_timeout_s
        + OVERDUE_GRACE_S
    )
    return now - timedelta(seconds=longest)


def end_if_overdue(
    job: Job,
    *,
    store: Transitions,
    uploads_arrived: Callable[[Job], bool],
    now: datetime,
) -> Job:
    """End a job still waiting for uploads after its window, unless they all arrived.

    All files there means the upload event is on its way (or being retried): the
    job stays until the event could no longer come, and then fails, never expires.
    Returns the job as it is now.
    """
    if not upload_window_over(job, now):
        return job
    if not uploads_arrived(job):
        ended = expire_job(job.job_id, store=store, now=now)
    elif now.timestamp() >= job.deadline_at + UPLOAD_EVENT_MAX_AGE_S + OVERDUE_GRACE_S:
        ended = store.transition(
            job.job_id,
            JobStatus.AWAITING_UPLOAD,
            JobStatus.FAILED,
            now=now,
            stage=Stage.FAILED,
            percent=0,
            error=dict(NEVER_PROCESSED_ERROR),
        )
    else:
        return job
    return ended or store.get(job.job_id) or job


def expire_job(job_id: str, *, store: Transitions, now: datetime) -> Job | None:
    """End a job whose uploads never completed; None if it was no longer waiting."""
    return store.transition(
        job_id,
        JobStatus.AWAITING_UPLOAD,
        JobStatus.EXPIRED,
        now=now,
        stage=Stage.EXPIRED,
        percent=0,
        error=dict(EXPIRED_ERROR),
    )


_DOWNLOAD_SUFFIXES: dict[ResultName, str] = {
    OutputFormat.WAV24: "-mastered-24bit",
    Preview.TARGET: "-preview-original",
    Preview.RESULT: "-preview-mastered",
}


def download_name(job: Job, name: ResultName) -> str:
    """``<target's stem>-mastered[-24bit].<ext>`` (previews: ``-preview-original``,
    ``-preview-mastered``): the name a browser saves a result as."""
    stem = PurePosixPath(job.inputs[InputRole.TARGET].filename).stem or "track"
    suffix = _DOWNLOAD_SUFFIXES.get(name, "-mastered")
    return f"{stem}{suffix}.{RESULT_SPECS[name].extension}"


def job_summary(job: Job) -> dict[str, Any]:
    """A job as GET /jobs lists it."""
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "metadata": job.metadata,
        "error": job.error,
    }


def job_view(job: Job, *, settings: Settings, links: ResultLinks, now: datetime) -> dict[str, Any]:
    """The public body of a job, as GET /jobs/{id} and the webhook show it."""
    results: dict[str, Any] = {}
    if job.status is JobStatus.SUCCEEDED:
        expires_at = now + timedelta(seconds=settings.result_url_ttl_s)
        for fmt, obj in job.results.items():
            results[str(fmt)] = {
                "url": links.presign_get(
                    settings.results_bucket,
                    obj.key,
                    expires_s=settings.result_url_ttl_s,
                    download_name=download_name(job, fmt),
                    content_type=RESULT_SPECS[fmt].content_type,
                ),
                "expires_at": iso(expires_at),
                "size": obj.size,
                "lufs": obj.lufs,
                "true_peak_dbtp": obj.true_peak_dbtp,
            }
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "progress": {"stage": str(job.stage), "percent": job.percent},
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "error": job.error,
        "results": results,
        "metrics": job.metrics,
        "metadata": job.metadata,
        "mastering": job.mastering.to_public(),
        "warnings": [dict(warning) for warning in job.warnings],
        "mode": str(job.mode),
        "previews": job.previews,
        "analysis": job.analysis,
    }
