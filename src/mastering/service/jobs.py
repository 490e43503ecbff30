"""Creating jobs and showing them: the domain behind the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from mastering.config import Settings
from mastering.errors import (
    ErrorCode,
    FileTooLarge,
    JobNotFound,
    UnknownPreset,
    UnsupportedFormat,
)
from mastering.formats import OUTPUT_SPECS, input_kind_for, normalise_content_type
from mastering.jobs.model import (
    DeclaredInput,
    InputRole,
    Job,
    JobStatus,
    Stage,
    iso,
    new_job_id,
    utc_now,
)
from mastering.jobs.store import JobStore
from mastering.options import resolve_options
from mastering.presets import find_preset
from mastering.storage.keys import is_job_id, upload_key
from mastering.storage.objects import ObjectStorage

if TYPE_CHECKING:
    # Types only: the master function uses job_view and ttl_for from here, and must
    # not import pydantic for them (cold start).
    from mastering.service.requests import CreateJobRequest, FileDeclaration


@dataclass(frozen=True)
class ApiPorts:
    settings: Settings
    store: JobStore
    storage: ObjectStorage
    clock: Callable[[], datetime] = field(default=utc_now)


def ttl_for(settings: Settings, moment: datetime) -> int:
    return int((moment + timedelta(days=settings.job_retention_days)).timestamp())


def _declared_input(
    role: InputRole, declared: FileDeclaration, settings: Settings
) -> DeclaredInput:
    kind = input_kind_for(declared.filename, declared.content_type)
    if kind is None:
        raise UnsupportedFormat(
            f"The {role} must be WAV, AIFF, FLAC, MP3, Ogg (Vorbis/Opus) or M4A/AAC; "
            f"got '{normalise_content_type(declared.content_type)}'"
        )
    if declared.size > settings.max_upload_bytes:
        raise FileTooLarge(
            f"The {role} is {declared.size} bytes; the limit is "
            f"{settings.max_upload_bytes} bytes ({settings.max_upload_bytes // (1024 * 1024)} MB)"
        )
    return DeclaredInput(
        filename=PurePosixPath(declared.filename.replace("\\", "/")).name or str(role),
        size=declared.size,
        content_type=normalise_content_type(declared.content_type),
        kind=kind,
    )


def create_job(request: CreateJobRequest, *, owner: str, ports: ApiPorts) -> dict[str, Any]:
    settings = ports.settings
    inputs = {InputRole.TARGET: _declared_input(InputRole.TARGET, request.target, settings)}
    if request.reference is not None:
        inputs[InputRole.REFERENCE] = _declared_input(
            InputRole.REFERENCE, request.reference, settings
        )
    preset = None
    if request.preset is not None:
        preset = find_preset(request.preset)
        if preset is None:
            raise UnknownPreset(f"There is no preset '{request.preset}'; GET /presets lists them")
    mastering = resolve_options(
        request.mastering.requested(), preset.defaults() if preset is not None else None
    )

    now = ports.clock()
    job = Job(
        job_id=new_job_id(),
        owner=owner,
        status=JobStatus.AWAITING_UPLOAD,
        created_at=iso(now),
        updated_at=iso(now),
        inputs=inputs,
        outputs=tuple(request.outputs),
        # The canonical id: "Rock" and "rock" are one preset (and one cached profile).
        preset=preset.id if preset is not None else None,
        metadata=request.metadata,
        mastering=mastering,
        stage=Stage.AWAITING_UPLOAD,
        deadline_at=int((now + timedelta(seconds=settings.upload_window_s)).timestamp()),
    )
    ports.store.create(job, ttl=ttl_for(settings, now))

    uploads = {}
    for role, declared in inputs.items():
        post = ports.storage.presign_post(
            settings.uploads_bucket,
            upload_key(job.job_id, role),
            content_type=declared.content_type,
            max_bytes=declared.size,
            expires_s=settings.upload_url_ttl_s,
            now=now,
        )
        uploads[str(role)] = {
            "url": post.url,
            "fields": post.fields,
            "expires_at": iso(post.expires_at),
        }
    return {"job_id": job.job_id, "status": str(job.status), "uploads": uploads}


def _load_owned(job_id: str, owner: str, store: JobStore) -> Job:
    # Another owner's job answers exactly like a missing one: no existence oracle.
    job = store.get(job_id) if is_job_id(job_id) else None
    if job is None or job.owner != owner:
        raise JobNotFound("No such job")
    return job


def expire_if_overdue(job: Job, *, ports: ApiPorts) -> Job:
    """Expire a job whose uploads never completed, at read time.

    The scheduled sweep does the same for jobs nobody reads; doing it here too
    means a client never sees a stale ``awaiting_upload``.
    """
    now = ports.clock()
    if job.status is not JobStatus.AWAITING_UPLOAD or now.timestamp() < job.deadline_at:
        return job
    expired = expire_job(job.job_id, store=ports.store, settings=ports.settings, now=now)
    return expired or ports.store.get(job.job_id) or job


def expire_job(job_id: str, *, store: JobStore, settings: Settings, now: datetime) -> Job | None:
    """End a job whose uploads never completed; None if it was no longer waiting."""
    return store.transition(
        job_id,
        JobStatus.AWAITING_UPLOAD,
        JobStatus.EXPIRED,
        now=iso(now),
        ttl=ttl_for(settings, now),
        stage=Stage.EXPIRED,
        percent=0,
        error={
            "code": str(ErrorCode.UPLOAD_EXPIRED),
            "message": "The uploads were not completed in time; create a new job",
        },
    )


def _download_name(job: Job, suffix: str, extension: str) -> str:
    stem = PurePosixPath(job.inputs[InputRole.TARGET].filename).stem or "track"
    return f"{stem}-mastered{suffix}.{extension}"


def job_view(
    job: Job, *, settings: Settings, storage: ObjectStorage, now: datetime
) -> dict[str, Any]:
    """The public body of a job, as GET /jobs/{id} and the webhook show it."""
    results: dict[str, Any] = {}
    if job.status is JobStatus.SUCCEEDED:
        expires_at = now + timedelta(seconds=settings.result_url_ttl_s)
        for fmt, obj in job.results.items():
            spec = OUTPUT_SPECS[fmt]
            suffix = "-24bit" if fmt == "wav24" else ""
            results[str(fmt)] = {
                "url": storage.presign_get(
                    settings.results_bucket,
                    obj.key,
                    expires_s=settings.result_url_ttl_s,
                    download_name=_download_name(job, suffix, spec.extension),
                    content_type=spec.content_type,
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
    }


def get_job(job_id: str, *, owner: str, ports: ApiPorts) -> dict[str, Any]:
    job = expire_if_overdue(_load_owned(job_id, owner, ports.store), ports=ports)
    return job_view(job, settings=ports.settings, storage=ports.storage, now=ports.clock())
