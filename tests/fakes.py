"""In-memory stand-ins for the service's ports, for unit tests that need no AWS."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mastering.formats import InputRole, ResultName
from mastering.jobs.model import (
    LIVE_STATUSES,
    Job,
    JobStatus,
    ResultObject,
    Stage,
    can_transition,
    iso,
)
from mastering.jobs.store import JobAlreadyExists, JobPage, ListPosition
from mastering.notify.events import JobEnded
from mastering.options import MasteringOptions
from mastering.storage.objects import ObjectInfo, PresignedPost


class InMemoryJobStore:
    """The JobStore port with the same conditional semantics as DynamoJobStore."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.webhooks: dict[str, dict[str, Any]] = {}

    def create(self, job: Job) -> None:
        if job.job_id in self.jobs:
            raise JobAlreadyExists(job.job_id)
        self.jobs[job.job_id] = job

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None and job_id in self.webhooks:
            return dataclasses.replace(job, webhook=self.webhooks[job_id])
        return job

    def record_upload(self, job_id: str, role: InputRole, *, now: datetime) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.AWAITING_UPLOAD:
            return None
        job = dataclasses.replace(job, uploaded=job.uploaded | {role}, updated_at=iso(now))
        self.jobs[job_id] = job
        return job

    def transition(
        self,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        now: datetime,
        stage: Stage,
        percent: int,
        deadline_at: int | None = None,
        error: dict[str, str] | None = None,
        results: dict[ResultName, ResultObject] | None = None,
        metrics: dict[str, float | None] | None = None,
        attempt_id: str | None = None,
        mastering: MasteringOptions | None = None,
        warnings: tuple[dict[str, str], ...] | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Job | None:
        if not can_transition(expected, new):
            raise ValueError(f"no transition from {expected} to {new}")
        job = self.jobs.get(job_id)
        if job is None or job.status is not expected:
            return None
        changes: dict[str, Any] = {
            "status": new,
            "updated_at": iso(now),
            "stage": stage,
            "percent": percent,
        }
        for name, value in (
            ("deadline_at", deadline_at),
            ("error", error),
            ("results", results),
            ("metrics", metrics),
            ("attempt_id", attempt_id),
            ("mastering", mastering),
            ("warnings", warnings),
            ("analysis", analysis),
        ):
            if value is not None:
                changes[name] = value
        job = dataclasses.replace(job, **changes)
        self.jobs[job_id] = job
        return job

    def set_progress(
        self, job_id: str, *, attempt_id: str, stage: Stage, percent: int, now: datetime
    ) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.PROCESSING or job.attempt_id != attempt_id:
            return False
        self.jobs[job_id] = dataclasses.replace(
            job, stage=stage, percent=percent, updated_at=iso(now)
        )
        return True

    def overdue(self, status: JobStatus, *, now_epoch: int, limit: int) -> list[str]:
        return [
            j.job_id
            for j in self.jobs.values()
            if j.status is status and j.deadline_at <= now_epoch
        ][:limit]

    def list_for_owner(
        self,
        owner: str,
        *,
        limit: int,
        status: JobStatus | None = None,
        after: ListPosition | None = None,
    ) -> JobPage:
        ordered = sorted(
            (job for job in self.jobs.values() if job.owner == owner),
            key=lambda job: (job.created_at, job.job_id),
            reverse=True,
        )
        if after is not None:
            ordered = [
                j for j in ordered if (j.created_at, j.job_id) < (after.created_at, after.job_id)
            ]
        matching = [job for job in ordered if status is None or job.status is status]
        page = matching[:limit]
        more = len(matching) > limit
        return JobPage(page, ListPosition(page[-1].job_id, page[-1].created_at) if more else None)

    def count_live(self, owner: str, *, created_since: datetime) -> int:
        return sum(
            1
            for job in self.jobs.values()
            if job.owner == owner
            and job.status in LIVE_STATUSES
            and job.created_at >= iso(created_since)
        )

    def delete(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def record_webhook(self, job_id: str, outcome: dict[str, Any]) -> None:
        self.webhooks[job_id] = outcome


class FakeStorage:
    """The ObjectStorage port over a dict of (bucket, key) -> bytes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.downloads: list[str] = []
        self.reads: list[str] = []
        self.fail_uploads_after: int | None = None

    def presign_post(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_s: int,
        now: datetime,
    ) -> PresignedPost:
        return PresignedPost(
            url=f"https://{bucket}.s3.test/",
            fields={"key": key, "Content-Type": content_type, "max": str(max_bytes)},
            expires_at=now + timedelta(seconds=expires_s),
        )

    def presign_get(
        self, bucket: str, key: str, *, expires_s: int, download_name: str, content_type: str
    ) -> str:
        return f"https://{bucket}.s3.test/{key}?download={download_name}"

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        data = self.objects.get((bucket, key))
        if data is None:
            return None
        # As S3 for a single-part upload: the ETag is the MD5 of the bytes.
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return ObjectInfo(size=len(data), content_type=None, etag=etag)

    def download(self, bucket: str, key: str, dest: Path, *, max_bytes: int) -> str:
        self.downloads.append(key)
        dest.write_bytes(self.objects[(bucket, key)])
        return "sha256-not-computed-by-the-fake"

    def read_bytes(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        self.reads.append(key)
        data = self.objects.get((bucket, key))
        return data if data is not None and len(data) <= max_bytes else None

    def write_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        self.objects[(bucket, key)] = data

    def upload(self, bucket: str, key: str, source: Path, *, content_type: str) -> int:
        if self.fail_uploads_after is not None:
            if self.fail_uploads_after == 0:
                raise ConnectionError("S3 is unreachable")
            self.fail_uploads_after -= 1
        data = source.read_bytes()
        self.objects[(bucket, key)] = data
        return len(data)

    def delete(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop((bucket, key), None)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        doomed = [k for (b, k) in self.objects if b == bucket and k.startswith(prefix)]
        for key in doomed:
            del self.objects[(bucket, key)]
        return len(doomed)


class RecordingQueue:
    """The webhook queue port: what was sent, and when each message is due again."""

    def __init__(self, *, fail_sends: bool = False) -> None:
        self.sent: list[JobEnded] = []
        self.retries: list[tuple[str, int]] = []
        self.fail_sends = fail_sends

    def send(self, event: JobEnded) -> None:
        if self.fail_sends:
            raise ConnectionError("SQS is unreachable")
        self.sent.append(event)

    def retry_in(self, receipt_handle: str, seconds: int) -> None:
        self.retries.append((receipt_handle, seconds))
