"""The master function's domain: turn upload notices into finished jobs.

1. ``accept_upload`` records that an input landed and, when it was the last one,
   moves the job to ``queued``. Both steps are conditional writes, so duplicate
   or concurrent S3 events start a job exactly once.
2. ``run_job`` takes a queued job to ``succeeded`` or ``failed`` in named steps:
   claim it, check the uploads (sizes before any download), take a reference seen
   before from the profile cache, download what is still needed, master in an
   isolated child with a deadline, cache the profile, upload the results, record
   the outcome; temp files are removed on every path.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from mastering.config import Settings
from mastering.engine.profile import ReferenceProfile
from mastering.errors import (
    FileTooLarge,
    IdenticalInputs,
    InternalError,
    InvalidAudio,
    JobCancelled,
    MasteringError,
    OutOfDisk,
    UploadMissing,
    is_out_of_disk,
)
from mastering.formats import RESULT_SPECS, InputRole, ResultName
from mastering.jobs.model import Job, JobMode, JobStatus, ResultObject, Stage, utc_now
from mastering.jobs.rules import processing_deadline
from mastering.jobs.store import JobStore
from mastering.pipeline import MasteringOutcome, MasteringRequest, ProgressCallback
from mastering.storage.keys import parse_upload_key, result_key, upload_key
from mastering.storage.objects import ObjectInfo, ObjectStorage
from mastering.worker.isolation import run_isolated
from mastering.worker.profile_cache import ProfileCache, content_id

logger = logging.getLogger(__name__)

WORK_DIR_PREFIX = "mastering-job-"

T = TypeVar("T")
MasterFn = Callable[[MasteringRequest, ProgressCallback], MasteringOutcome]


class Isolator(Protocol):
    """Runs the mastering somewhere it may die without taking the caller along."""

    def __call__(
        self,
        work: Callable[[ProgressCallback], T],
        *,
        budget_s: float,
        on_progress: ProgressCallback,
        should_stop: Callable[[], bool] | None = None,
    ) -> T: ...


def _default_master(request: MasteringRequest, on_progress: ProgressCallback) -> MasteringOutcome:
    from mastering.pipeline import master_files

    return master_files(request, on_progress)


def _default_preload() -> None:
    from mastering.pipeline import preload_engine

    preload_engine()


@dataclass(frozen=True)
class WorkerPorts:
    settings: Settings
    store: JobStore
    storage: ObjectStorage
    clock: Callable[[], datetime] = field(default=utc_now)
    master: MasterFn = field(default=_default_master)
    preload: Callable[[], None] = field(default=_default_preload)
    isolate: Isolator = field(default=run_isolated)


@dataclass(frozen=True)
class UploadNotice:
    bucket: str
    key: str
    size: int | None = None


def accept_upload(notice: UploadNotice, *, ports: WorkerPorts) -> Job | None:
    """Record an arrived upload; return the job if this upload made it ready to run."""
    settings = ports.settings
    parsed = parse_upload_key(notice.key)
    if notice.bucket != settings.uploads_bucket or parsed is None:
        logger.warning("ignoring an object that is not a job upload", extra={"key": notice.key})
        return None
    now = ports.clock()
    job = ports.store.record_upload(parsed.job_id, parsed.role, now=now)
    if job is None:
        _drop_orphan_upload(notice, parsed.job_id, ports)
        return None
    if parsed.role not in job.required_roles:
        logger.warning("upload of an input the job does not use", extra={"job_id": job.job_id})
        return None
    if not job.all_uploaded:
        return None
    return ports.store.transition(
        job.job_id,
        JobStatus.AWAITING_UPLOAD,
        JobStatus.QUEUED,
        now=now,
        stage=Stage.QUEUED,
        percent=0,
        deadline_at=processing_deadline(settings, now),
    )


def _drop_orphan_upload(notice: UploadNotice, job_id: str, ports: WorkerPorts) -> None:
    """An upload no job will use (its job ended, was cancelled or deleted) is removed
    now rather than by the bucket's one-day rule; one whose job is queued or running
    (a repeated S3 event) is left alone."""
    current = ports.store.get(job_id)
    if current is not None and not current.status.is_terminal:
        logger.info("repeated upload event for a job under way", extra={"job_id": job_id})
        return
    logger.info(
        "removing an upload its job will never use",
        extra={"job_id": job_id, "status": str(current.status) if current else "unknown"},
    )
    ports.storage.delete(notice.bucket, [notice.key])


def clean_stale_work_dirs(work_dir: Path) -> None:
    """Remove work directories a killed earlier invocation left in this sandbox's /tmp."""
    for stale in work_dir.glob(f"{WORK_DIR_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def run_job(job: Job, *, remaining_s: Callable[[], float], ports: WorkerPorts) -> Job:
    """Process a queued job to a terminal state and return it."""
    started = time.monotonic()
    claimed = _claim(job, ports)
    if claimed is None:
        logger.info("job already taken by another run", extra={"job_id": job.job_id})
        return ports.store.get(job.job_id) or job
    # One line per processing run: the fault tests count them.
    logger.info(
        "job claimed: %s", job.job_id, extra={"job_id": job.job_id, "attempt": claimed.attempt_id}
    )
    report = _progress_reporter(claimed, ports)
    settings = ports.settings
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=settings.work_dir))
    written: list[str] = []
    try:
        uploads = _check_uploads(claimed, ports)
        cached = _cached_profile(claimed, uploads, ports)
        request = _mastering_request(claimed, uploads, cached, work, ports)
        _stop_if_cancelled(claimed, ports)
        outcome = _master_isolated(claimed, request, remaining_s, report, ports)
        if cached is None:
            _cache_profile(claimed, uploads, outcome, ports)
        _stop_if_cancelled(claimed, ports)
        results = _upload_results(claimed, outcome, written, report, ports)
        ended = _succeed(claimed, outcome, results, started, written, ports)
    except JobCancelled:
        ended = _stopped(claimed, written, ports)
    except MasteringError as error:
        ended = _fail(claimed, error, written, ports)
    except Exception:
        logger.exception("job failed unexpectedly", extra={"job_id": job.job_id})
        ended = _fail(claimed, InternalError("Mastering failed unexpectedly"), written, ports)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ended


def _still_ours(job: Job, ports: WorkerPorts) -> bool:
    """Whether this run still owns the job: not cancelled, deleted or ended by the
    lifecycle function meanwhile."""
    current = ports.store.get(job.job_id)
    return (
        current is not None
        and current.status is JobStatus.PROCESSING
        and current.attempt_id == job.attempt_id
    )


def _stop_if_cancelled(job: Job, ports: WorkerPorts) -> None:
    if not _still_ours(job, ports):
        raise JobCancelled("The job was cancelled")


def _stopped(job: Job, written: list[str], ports: WorkerPorts) -> Job:
    """The job was cancelled (or ended by someone else) under this run: publish
    nothing, and leave the job as that request wrote it."""
    logger.info("job stopped, no longer ours: %s", job.job_id, extra={"job_id": job.job_id})
    if written:
        ports.storage.delete(ports.settings.results_bucket, written)
    return ports.store.get(job.job_id) or job


def _claim(job: Job, ports: WorkerPorts) -> Job | None:
    """queued -> processing under a fresh attempt id; None if another run has it."""
    now = ports.clock()
    return ports.store.transition(
        job.job_id,
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        now=now,
        stage=Stage.DOWNLOADING,
        percent=5,
        attempt_id=str(uuid.uuid4()),
        deadline_at=processing_deadline(ports.settings, now),
    )


def _progress_reporter(job: Job, ports: WorkerPorts) -> ProgressCallback:
    attempt_id = job.attempt_id or ""

    def report(stage: Stage, percent: int) -> None:
        ports.store.set_progress(
            job.job_id, attempt_id=attempt_id, stage=stage, percent=percent, now=ports.clock()
        )

    return report


def _check_uploads(job: Job, ports: WorkerPorts) -> dict[InputRole, ObjectInfo]:
    """HEAD every upload and check its size, before downloading anything.

    A bad second file should not cost the download of the first.
    """
    settings = ports.settings
    limit = settings.max_upload_bytes
    uploads: dict[InputRole, ObjectInfo] = {}
    for role, declared in job.inputs.items():
        info = ports.storage.head(settings.uploads_bucket, upload_key(job.job_id, role))
        if info is None:
            raise UploadMissing(f"The {role} upload is missing")
        if info.size > min(declared.size, limit):
            raise FileTooLarge(
                f"The {role} is {info.size} bytes, more than the "
                f"{min(declared.size, limit)} bytes declared or allowed"
            )
        if info.size == 0:
            raise InvalidAudio(f"The {role} file is empty")
        uploads[role] = info
    reference = uploads.get(InputRole.REFERENCE)
    target_id = content_id(uploads[InputRole.TARGET])
    if reference is not None and target_id is not None and target_id == content_id(reference):
        # Same bytes, known from S3 alone: neither file needs downloading to say so.
        raise IdenticalInputs("The target and the reference are the same file")
    return uploads


def _profiles(ports: WorkerPorts) -> ProfileCache:
    return ProfileCache(ports.storage, ports.settings.results_bucket)


def _cached_profile(
    job: Job, uploads: dict[InputRole, ObjectInfo], ports: WorkerPorts
) -> ReferenceProfile | None:
    """The reference's (or preset's) profile if an earlier job stored it."""
    reference = uploads.get(InputRole.REFERENCE)
    profile = None
    if reference is not None:
        profile = _profiles(ports).load(job.owner, reference)
    elif job.preset is not None:
        profile = _profiles(ports).load_preset(job.preset)
    if profile is not None:
        logger.info("reference profile from the cache", extra={"job_id": job.job_id})
    return profile


def _download(job: Job, role: InputRole, work: Path, ports: WorkerPorts) -> Path:
    settings = ports.settings
    # Local names are fixed by role: user file names never reach the file system.
    path = work / f"input-{role}"
    try:
        ports.storage.download(
            settings.uploads_bucket,
            upload_key(job.job_id, role),
            path,
            max_bytes=min(job.inputs[role].size, settings.max_upload_bytes),
        )
    except OSError as error:
        if is_out_of_disk(error):
            raise OutOfDisk() from error
        raise
    return path


def _mastering_request(
    job: Job,
    uploads: dict[InputRole, ObjectInfo],
    cached: ReferenceProfile | None,
    work: Path,
    ports: WorkerPorts,
) -> MasteringRequest:
    """Download what the job still needs and say what to master."""
    settings = ports.settings
    # An analysis needs the reference's meters: a cached profile from before profiles
    # carried them lacks them.
    lacks_meters = job.mode is JobMode.ANALYZE and cached is not None and cached.analysis is None
    needs_reference = InputRole.REFERENCE in uploads and (cached is None or lacks_meters)
    return MasteringRequest(
        target=_download(job, InputRole.TARGET, work, ports),
        reference=_download(job, InputRole.REFERENCE, work, ports) if needs_reference else None,
        reference_profile=cached,
        preset_id=job.preset,
        options=job.mastering,
        outputs=job.outputs,
        mode=job.mode,
        previews=job.previews,
        work_dir=work,
        min_duration_s=settings.min_duration_s,
        max_duration_s=settings.max_duration_s,
        ffmpeg_path=settings.ffmpeg_path,
    )


def _reserve_s(remaining_s: float) -> float:
    # Time kept back from the engine to upload results and record the outcome.
    return min(60.0, max(2.0, remaining_s * 0.1))


def _master_isolated(
    job: Job,
    request: MasteringRequest,
    remaining_s: Callable[[], float],
    report: ProgressCallback,
    ports: WorkerPorts,
) -> MasteringOutcome:
    ports.preload()
    remaining = remaining_s()
    master = ports.master
    return ports.isolate(
        lambda progress: master(request, progress),
        budget_s=remaining - _reserve_s(remaining),
        on_progress=report,
        # Read about once a second: a cancel stops the engine within seconds.
        should_stop=lambda: not _still_ours(job, ports),
    )


def _cache_profile(
    job: Job, uploads: dict[InputRole, ObjectInfo], outcome: MasteringOutcome, ports: WorkerPorts
) -> None:
    profile = outcome.reference_profile
    if profile is None:
        return
    reference = uploads.get(InputRole.REFERENCE)
    if reference is not None:
        _profiles(ports).store(job.owner, reference, profile)
    elif job.preset is not None:
        _profiles(ports).store_preset(job.preset, profile)


def _upload_results(
    job: Job,
    outcome: MasteringOutcome,
    written: list[str],
    report: ProgressCallback,
    ports: WorkerPorts,
) -> dict[ResultName, ResultObject]:
    """Upload each result; ``written`` lists the keys so a failure can remove them."""
    report(Stage.UPLOADING, 90)
    bucket = ports.settings.results_bucket
    results: dict[ResultName, ResultObject] = {}
    for fmt, path in outcome.files.items():
        key = result_key(job.job_id, fmt)
        written.append(key)
        size = ports.storage.upload(bucket, key, path, content_type=RESULT_SPECS[fmt].content_type)
        measured = outcome.measurements.get(fmt)
        results[fmt] = ResultObject(
            key=key,
            size=size,
            lufs=measured.lufs if measured else None,
            true_peak_dbtp=measured.true_peak_dbtp if measured else None,
        )
    return results


def _succeed(
    job: Job,
    outcome: MasteringOutcome,
    results: dict[ResultName, ResultObject],
    started: float,
    written: list[str],
    ports: WorkerPorts,
) -> Job:
    metrics = {**outcome.metrics, "processing_s": round(time.monotonic() - started, 3)}
    finished = ports.store.transition(
        job.job_id,
        JobStatus.PROCESSING,
        JobStatus.SUCCEEDED,
        now=ports.clock(),
        stage=Stage.DONE,
        percent=100,
        results=results,
        metrics=metrics,
        mastering=outcome.options,
        warnings=tuple(warning.to_dict() for warning in outcome.warnings),
        analysis=outcome.analysis,
    )
    if finished is None:
        # Someone (the on-failure handler or the sweep) ended the job meanwhile;
        # their verdict stands, and results nobody can see must not linger.
        ports.storage.delete(ports.settings.results_bucket, written)
        return ports.store.get(job.job_id) or job
    logger.info("job succeeded", extra={"job_id": job.job_id, "metrics": metrics})
    return finished


def _fail(job: Job, error: MasteringError, written: list[str], ports: WorkerPorts) -> Job:
    logger.info(
        "job failed",
        extra={"job_id": job.job_id, "code": str(error.code), "reason": error.message},
    )
    if written:
        ports.storage.delete(ports.settings.results_bucket, written)
    current = ports.store.get(job.job_id) or job
    failed = ports.store.transition(
        job.job_id,
        JobStatus.PROCESSING,
        JobStatus.FAILED,
        now=ports.clock(),
        stage=Stage.FAILED,
        percent=current.percent,
        error=error.to_dict(),
    )
    return failed or ports.store.get(job.job_id) or job
