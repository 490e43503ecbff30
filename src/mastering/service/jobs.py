"""Creating jobs and showing them: the domain behind the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from mastering.config import Settings
from mastering.errors import (
    FileTooLarge,
    JobNotFound,
    UnknownPreset,
    UnsupportedFormat,
)
from mastering.formats import InputRole, input_kind_for, normalise_content_type
from mastering.jobs.model import DeclaredInput, Job, JobStatus, Stage, iso, new_job_id, utc_now
from mastering.jobs.rules import expire_job, job_view, upload_deadline, upload_window_over
from mastering.jobs.store import JobStore
from mastering.options import resolve_options
from mastering.presets import find_preset
from mastering.storage.keys import is_job_id, upload_key
from mastering.storage.objects import ObjectStorage

if TYPE_CHECKING:
    # Types only: pydantic is the presign function's (the request models), imported
    # by the handler itself.
    from mastering.service.requests import CreateJobRequest, FileDeclaration


@dataclass(frozen=True)
class ApiPorts:
    settings: Settings
    store: JobStore
    storage: ObjectStorage
    clock: Callable[[], datetime] = field(default=utc_now)


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
        deadline_at=upload_deadline(settings, now),
    )
    ports.store.create(job)

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
    if not upload_window_over(job, now):
        return job
    expired = expire_job(job.job_id, store=ports.store, now=now)
    return expired or ports.store.get(job.job_id) or job


def get_job(job_id: str, *, owner: str, ports: ApiPorts) -> dict[str, Any]:
    job = expire_if_overdue(_load_owned(job_id, owner, ports.store), ports=ports)
    return job_view(job, settings=ports.settings, links=ports.storage, now=ports.clock())
