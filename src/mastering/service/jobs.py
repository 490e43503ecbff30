"""Creating, showing, listing, cancelling and deleting jobs: the domain behind the
HTTP API."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from mastering.config import Settings
from mastering.errors import (
    FileTooLarge,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    TooManyJobs,
    UnknownPreset,
    UnsupportedFormat,
)
from mastering.formats import InputRole, input_kind_for, normalise_content_type
from mastering.jobs.model import (
    DeclaredInput,
    Job,
    JobMode,
    JobStatus,
    Stage,
    iso,
    new_job_id,
    utc_now,
)
from mastering.jobs.rules import (
    end_if_overdue,
    job_summary,
    job_view,
    live_since,
    upload_deadline,
)
from mastering.jobs.store import JobStore, ListPosition
from mastering.options import resolve_options
from mastering.presets import find_preset
from mastering.storage.keys import is_job_id, results_prefix, upload_key, uploads_prefix
from mastering.storage.objects import ObjectStorage, uploads_arrived

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
    _check_live_limit(owner, now, ports)
    job = Job(
        job_id=new_job_id(),
        owner=owner,
        status=JobStatus.AWAITING_UPLOAD,
        created_at=iso(now),
        updated_at=iso(now),
        inputs=inputs,
        outputs=tuple(request.outputs) if request.mode is JobMode.MASTER else (),
        # The canonical id: "Rock" and "rock" are one preset (and one cached profile).
        preset=preset.id if preset is not None else None,
        metadata=request.metadata,
        mastering=mastering,
        mode=request.mode,
        # A preview job renders nothing but the previews.
        previews=request.previews or request.mode is JobMode.PREVIEW,
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


def _check_live_limit(owner: str, now: datetime, ports: ApiPorts) -> None:
    # A soft limit: two creates racing may both pass it, which costs one extra job at
    # most per racing request; a hard one would need a counter item per owner.
    limit = ports.settings.max_live_jobs_per_owner
    if limit <= 0:
        return
    live = ports.store.count_live(owner, created_since=live_since(ports.settings, now))
    if live >= limit:
        raise TooManyJobs(
            f"There are already {live} jobs in progress for this user (the limit is {limit}); "
            "wait for one to finish, or cancel one"
        )


def _load_owned(job_id: str, owner: str, store: JobStore) -> Job:
    # Another owner's job answers exactly like a missing one: no existence oracle.
    job = store.get(job_id) if is_job_id(job_id) else None
    if job is None or job.owner != owner:
        raise JobNotFound("No such job")
    return job


def expire_if_overdue(job: Job, *, ports: ApiPorts) -> Job:
    """End a job whose uploads never completed, at read time.

    The scheduled sweep does the same for jobs nobody reads; doing it here too
    means a client never sees a stale ``awaiting_upload``.
    """
    bucket = ports.settings.uploads_bucket
    return end_if_overdue(
        job,
        store=ports.store,
        uploads_arrived=lambda waiting: uploads_arrived(waiting, ports.storage, bucket),
        now=ports.clock(),
    )


def get_job(job_id: str, *, owner: str, ports: ApiPorts) -> dict[str, Any]:
    job = expire_if_overdue(_load_owned(job_id, owner, ports.store), ports=ports)
    return job_view(job, settings=ports.settings, links=ports.storage, now=ports.clock())


def encode_cursor(position: ListPosition) -> str:
    raw = json.dumps({"j": position.job_id, "c": position.created_at}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListPosition:
    """The position a cursor from ``encode_cursor`` names; InvalidRequest for anything else.

    The cursor carries no owner: the listing always uses the caller's, so a cursor
    cannot reach another owner's jobs.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        position = ListPosition(job_id=str(data["j"]), created_at=str(data["c"]))
        datetime.fromisoformat(position.created_at)
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise InvalidRequest("cursor: not a cursor this API gave out") from error
    if not is_job_id(position.job_id):
        raise InvalidRequest("cursor: not a cursor this API gave out")
    return position


def list_jobs(
    *,
    owner: str,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
    ports: ApiPorts,
) -> dict[str, Any]:
    if not owner:
        raise InvalidRequest("X-Owner-Id is required to list jobs")
    after = decode_cursor(cursor) if cursor else None
    page = ports.store.list_for_owner(owner, limit=limit, status=status, after=after)
    return {
        "jobs": [job_summary(job) for job in page.jobs],
        "next_cursor": encode_cursor(page.next_position) if page.next_position else None,
    }


# A cancel retries its conditional write when the job moved on meanwhile (e.g. queued
# -> processing); a job changes state a handful of times at most.
_CANCEL_ATTEMPTS = 5


def _cancel(job: Job, ports: ApiPorts) -> Job:
    """Move a live job to cancelled; JobFinished if it has already ended."""
    for _ in range(_CANCEL_ATTEMPTS):
        if job.status.is_terminal:
            raise JobFinished(f"The job has already ended ({job.status}); nothing to cancel")
        cancelled = ports.store.transition(
            job.job_id,
            job.status,
            JobStatus.CANCELLED,
            now=ports.clock(),
            stage=Stage.CANCELLED,
            percent=job.percent,
        )
        if cancelled is not None:
            return cancelled
        current = ports.store.get(job.job_id)
        if current is None:
            raise JobNotFound("No such job")
        job = current
    raise JobFinished("The job kept changing state; try again")


def cancel_job(job_id: str, *, owner: str, ports: ApiPorts) -> dict[str, Any]:
    """Cancel a live job. A processing run notices within seconds, stops, and publishes
    nothing (its own final write is conditional on the job still processing)."""
    job = expire_if_overdue(_load_owned(job_id, owner, ports.store), ports=ports)
    cancelled = _cancel(job, ports)
    return job_view(cancelled, settings=ports.settings, links=ports.storage, now=ports.clock())


def delete_job(job_id: str, *, owner: str, ports: ApiPorts) -> None:
    """Cancel the job if it is live, delete its uploads and results, then the job."""
    job = _load_owned(job_id, owner, ports.store)
    if not job.status.is_terminal:
        # It may end by itself meanwhile; either way it is deleted below.
        with contextlib.suppress(JobFinished):
            _cancel(job, ports)
    settings = ports.settings
    ports.storage.delete_prefix(settings.uploads_bucket, uploads_prefix(job_id))
    ports.storage.delete_prefix(settings.results_bucket, results_prefix(job_id))
    ports.store.delete(job_id)
