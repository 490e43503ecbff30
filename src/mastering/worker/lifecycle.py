"""Ending jobs nobody else will end.

- ``fail_abandoned``: the master function died (timeout, out of memory, crash)
  and Lambda handed its event to the on-failure destination. Its jobs that are
  still queued or processing are failed with a reason.
- ``sweep``: on a schedule, expire jobs whose uploads never completed (a job whose
  files all arrived waits for its upload event instead) and fail jobs that overran
  the master's timeout by more than the grace period (a belt-and-braces path for
  when the destination itself failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mastering.config import Settings
from mastering.errors import ErrorCode
from mastering.jobs.model import Job, JobStatus, Stage, utc_now
from mastering.jobs.rules import end_if_overdue
from mastering.jobs.store import JobStore
from mastering.storage.objects import ObjectStorage, uploads_arrived

logger = logging.getLogger(__name__)

SWEEP_BATCH = 100


@dataclass(frozen=True)
class LifecyclePorts:
    settings: Settings
    store: JobStore
    storage: ObjectStorage
    clock: Callable[[], datetime] = field(default=utc_now)


@dataclass(frozen=True)
class SweepReport:
    expired: list[str]
    failed: list[str]


def _fail(job: Job, code: ErrorCode, message: str, ports: LifecyclePorts) -> Job | None:
    now = ports.clock()
    return ports.store.transition(
        job.job_id,
        job.status,
        JobStatus.FAILED,
        now=now,
        stage=Stage.FAILED,
        percent=job.percent,
        error={"code": str(code), "message": message},
    )


def failure_reason(error_message: str) -> tuple[ErrorCode, str]:
    """Classify what Lambda reported about a dead invocation."""
    lowered = error_message.lower()
    if "eventageexceeded" in lowered:
        return ErrorCode.INTERNAL_ERROR, (
            "The service was too busy to start this job in time; create a new job"
        )
    if "timed out" in lowered:
        return ErrorCode.PROCESSING_TIMEOUT, (
            "Mastering took longer than this service allows; try a shorter track"
        )
    if "signal: killed" in lowered or "memory" in lowered:
        return ErrorCode.INTERNAL_ERROR, (
            "Mastering ran out of memory; try a shorter track or a lower sample rate"
        )
    return ErrorCode.INTERNAL_ERROR, "Mastering stopped unexpectedly"


def fail_abandoned(job_ids: list[str], error_message: str, *, ports: LifecyclePorts) -> list[str]:
    code, message = failure_reason(error_message)
    ended = []
    for job_id in dict.fromkeys(job_ids):
        job = ports.store.get(job_id)
        # awaiting_upload too: Lambda gave up on the upload event that would have
        # queued the job (throttled past the event's maximum age).
        if job is None or job.status.is_terminal:
            continue
        if _fail(job, code, message, ports) is not None:
            ended.append(job_id)
            logger.info("abandoned job failed", extra={"job_id": job_id, "code": str(code)})
    return ended


def _arrived(job: Job, ports: LifecyclePorts) -> bool:
    return uploads_arrived(job, ports.storage, ports.settings.uploads_bucket)


def sweep(*, ports: LifecyclePorts) -> SweepReport:
    now = ports.clock()
    epoch = int(now.timestamp())
    expired: list[str] = []
    failed: list[str] = []
    for job_id in ports.store.overdue(
        JobStatus.AWAITING_UPLOAD, now_epoch=epoch, limit=SWEEP_BATCH
    ):
        job = ports.store.get(job_id)
        if job is None or job.status is not JobStatus.AWAITING_UPLOAD:
            continue
        done = end_if_overdue(
            job, store=ports.store, uploads_arrived=lambda j: _arrived(j, ports), now=now
        )
        if done.status is JobStatus.EXPIRED:
            expired.append(job_id)
        elif done.status is JobStatus.FAILED:
            failed.append(job_id)
    for status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        for job_id in ports.store.overdue(status, now_epoch=epoch, limit=SWEEP_BATCH):
            job = ports.store.get(job_id)
            if job is None or job.status is not status:
                continue
            code, message = failure_reason("timed out")
            if _fail(job, code, message, ports) is not None:
                failed.append(job_id)
    return SweepReport(expired=expired, failed=failed)
