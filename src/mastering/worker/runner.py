"""The master function's domain: turn upload notices into finished jobs.

1. ``accept_upload`` records that an input landed and, when it was the last one,
   moves the job to ``queued``. Both steps are conditional writes, so duplicate
   or concurrent S3 events start a job exactly once.
2. ``run_job`` takes a queued job to ``succeeded`` or ``failed``: sizes checked
   before download, a reference seen before by its owner taken from the profile
   cache instead of downloaded, the mastering itself in an isolated child with a
   deadline, results uploaded, temp files removed on every path.
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

from mastering.config import Settings
from mastering.errors import (
    FileTooLarge,
    IdenticalInputs,
    InternalError,
    InvalidAudio,
    MasteringError,
    UploadMissing,
)
from mastering.formats import OUTPUT_SPECS, OutputFormat
from mastering.jobs.model import (
    InputRole,
    Job,
    JobStatus,
    ResultObject,
    Stage,
    iso,
    utc_now,
)
from mastering.jobs.store import JobStore
from mastering.notify.job_events import JobNotifier, NoNotifier
from mastering.pipeline import MasteringOutcome, MasteringRequest, ProgressCallback
from mastering.service.jobs import ttl_for
from mastering.storage.keys import parse_upload_key, result_key, upload_key
from mastering.storage.objects import ObjectInfo, ObjectStorage
from mastering.worker.isolation import run_isolated
from mastering.worker.profile_cache import ProfileCache, content_id

logger = logging.getLogger(__name__)

WORK_DIR_PREFIX = "mastering-job-"
# After the master function's own timeout, how long before a job still queued or
# processing is declared dead by the sweep.
OVERDUE_GRACE_S = 120
# Kept free after webhook retries so the invocation still returns on its own.
_NOTIFY_MARGIN_S = 1.0

MasterFn = Callable[[MasteringRequest, ProgressCallback], MasteringOutcome]


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
    master_timeout_s: int
    clock: Callable[[], datetime] = field(default=utc_now)
    master: MasterFn = field(default=_default_master)
    preload: Callable[[], None] = field(default=_default_preload)
    notifier: JobNotifier = field(default_factory=NoNotifier)


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
    job = ports.store.record_upload(
        parsed.job_id, parsed.role, now=iso(now), ttl=ttl_for(settings, now)
    )
    if job is None:
        logger.info(
            "upload for a job that is unknown or no longer waiting",
            extra={"job_id": parsed.job_id, "role": str(parsed.role)},
        )
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
        now=iso(now),
        ttl=ttl_for(settings, now),
        stage=Stage.QUEUED,
        percent=0,
        deadline_at=int(now.timestamp()) + ports.master_timeout_s + OVERDUE_GRACE_S,
    )


def clean_stale_work_dirs(work_dir: Path) -> None:
    """Remove work directories a killed earlier invocation left in this sandbox's /tmp."""
    for stale in work_dir.glob(f"{WORK_DIR_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _reserve_s(remaining_s: float) -> float:
    # Time kept back from the engine to upload results and record the outcome.
    return min(60.0, max(2.0, remaining_s * 0.1))


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


def _download(job: Job, role: InputRole, work: Path, ports: WorkerPorts) -> Path:
    settings = ports.settings
    # Local names are fixed by role: user file names never reach the file system.
    path = work / f"input-{role}"
    ports.storage.download(
        settings.uploads_bucket,
        upload_key(job.job_id, role),
        path,
        max_bytes=min(job.inputs[role].size, settings.max_upload_bytes),
    )
    return path


def run_job(job: Job, *, remaining_s: Callable[[], float], ports: WorkerPorts) -> Job:
    """Process a queued job to a terminal state and return it."""
    settings = ports.settings
    store = ports.store
    started = time.monotonic()
    attempt_id = str(uuid.uuid4())
    now = ports.clock()
    processing = store.transition(
        job.job_id,
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        now=iso(now),
        ttl=ttl_for(settings, now),
        stage=Stage.DOWNLOADING,
        percent=5,
        attempt_id=attempt_id,
        deadline_at=int(now.timestamp()) + ports.master_timeout_s + OVERDUE_GRACE_S,
    )
    if processing is None:
        logger.info("job already taken by another run", extra={"job_id": job.job_id})
        return store.get(job.job_id) or job

    def report(stage: Stage, percent: int) -> None:
        store.set_progress(
            job.job_id,
            attempt_id=attempt_id,
            stage=stage,
            percent=percent,
            now=iso(ports.clock()),
        )

    settings.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=settings.work_dir))
    written: list[str] = []
    profiles = ProfileCache(ports.storage, settings.results_bucket)
    try:
        uploads = _check_uploads(processing, ports)
        reference_upload = uploads.get(InputRole.REFERENCE)
        cached_profile = None
        if reference_upload is not None:
            cached_profile = profiles.load(processing.owner, reference_upload)
        elif processing.preset is not None:
            cached_profile = profiles.load_preset(processing.preset)
        if cached_profile is not None:
            logger.info("reference profile from the cache", extra={"job_id": job.job_id})
        request = MasteringRequest(
            target=_download(processing, InputRole.TARGET, work, ports),
            reference=(
                _download(processing, InputRole.REFERENCE, work, ports)
                if reference_upload is not None and cached_profile is None
                else None
            ),
            reference_profile=cached_profile,
            preset_id=processing.preset,
            options=processing.mastering,
            outputs=processing.outputs,
            work_dir=work,
            min_duration_s=settings.min_duration_s,
            max_duration_s=settings.max_duration_s,
            ffmpeg_path=settings.ffmpeg_path,
        )
        ports.preload()
        remaining = remaining_s()
        master = ports.master
        outcome = run_isolated(
            lambda progress: master(request, progress),
            budget_s=remaining - _reserve_s(remaining),
            on_progress=report,
        )
        if cached_profile is None and outcome.reference_profile is not None:
            if reference_upload is not None:
                profiles.store(processing.owner, reference_upload, outcome.reference_profile)
            elif processing.preset is not None:
                profiles.store_preset(processing.preset, outcome.reference_profile)
        report(Stage.UPLOADING, 90)
        results: dict[OutputFormat, ResultObject] = {}
        for fmt, path in outcome.files.items():
            key = result_key(job.job_id, fmt)
            written.append(key)
            size = ports.storage.upload(
                settings.results_bucket, key, path, content_type=OUTPUT_SPECS[fmt].content_type
            )
            measured = outcome.measurements.get(fmt)
            results[fmt] = ResultObject(
                key=key,
                size=size,
                lufs=measured.lufs if measured else None,
                true_peak_dbtp=measured.true_peak_dbtp if measured else None,
            )
        metrics = {**outcome.metrics, "processing_s": round(time.monotonic() - started, 3)}
        done_at = ports.clock()
        finished = store.transition(
            job.job_id,
            JobStatus.PROCESSING,
            JobStatus.SUCCEEDED,
            now=iso(done_at),
            ttl=ttl_for(settings, done_at),
            stage=Stage.DONE,
            percent=100,
            results=results,
            metrics=metrics,
            mastering=outcome.options,
            warnings=tuple(warning.to_dict() for warning in outcome.warnings),
        )
        if finished is None:
            # Someone (the on-failure handler or the sweep) ended the job meanwhile;
            # their verdict stands, and results nobody can see must not linger.
            ports.storage.delete(settings.results_bucket, written)
            return store.get(job.job_id) or processing
        logger.info("job succeeded", extra={"job_id": job.job_id, "metrics": metrics})
        ended = finished
    except MasteringError as error:
        ended = _fail(processing, error, written, ports)
    except Exception:
        logger.exception("job failed unexpectedly", extra={"job_id": job.job_id})
        ended = _fail(processing, InternalError("Mastering failed unexpectedly"), written, ports)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if ended.status.is_terminal:
        # After the outcome is stored: delivery can only ever add news, not change it.
        try:
            ports.notifier.job_ended(ended, budget_s=remaining_s() - _NOTIFY_MARGIN_S)
        except Exception:
            logger.exception("job-ended notification failed", extra={"job_id": job.job_id})
    return ended


def _fail(job: Job, error: MasteringError, written: list[str], ports: WorkerPorts) -> Job:
    settings = ports.settings
    logger.info(
        "job failed",
        extra={"job_id": job.job_id, "code": str(error.code), "reason": error.message},
    )
    if written:
        ports.storage.delete(settings.results_bucket, written)
    current = ports.store.get(job.job_id) or job
    now = ports.clock()
    failed = ports.store.transition(
        job.job_id,
        JobStatus.PROCESSING,
        JobStatus.FAILED,
        now=iso(now),
        ttl=ttl_for(settings, now),
        stage=Stage.FAILED,
        percent=current.percent,
        error=error.to_dict(),
    )
    return failed or ports.store.get(job.job_id) or job
