"""The job: its states, the transitions between them, and its stored form.

The store enforces transitions with conditional writes; this module says which
ones exist so that every writer agrees.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from mastering.formats import InputKind, InputRole, OutputFormat, ResultName, result_name
from mastering.options import MasteringOptions


class JobStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED}
)
LIVE_STATUSES = frozenset({JobStatus.AWAITING_UPLOAD, JobStatus.QUEUED, JobStatus.PROCESSING})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # failed straight from awaiting_upload: an upload that arrives broken or too big,
    # or one whose S3 event was given up on (the lifecycle function ends it).
    JobStatus.AWAITING_UPLOAD: frozenset(
        {JobStatus.QUEUED, JobStatus.EXPIRED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


class JobMode(StrEnum):
    """What a job renders (DESIGN "Previews and modes")."""

    MASTER = "master"  # the requested outputs (and the previews, if asked)
    PREVIEW = "preview"  # only the previews: the loudest 30 s, mastered
    ANALYZE = "analyze"  # nothing: the inputs are measured


class Stage(StrEnum):
    """Progress stages, in the order a job passes them."""

    AWAITING_UPLOAD = "awaiting_upload"
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    DECODING = "decoding"
    ANALYZING = "analyzing"
    MATCHING = "matching"
    ENCODING = "encoding"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


def owner_key(owner: str) -> str:
    """The owner index's partition key: never empty (DynamoDB refuses an empty string
    as an index key), and the same for every job of one owner, the empty one included."""
    return f"owner#{owner}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class DeclaredInput:
    """What the client said about a file before uploading it."""

    filename: str
    size: int
    content_type: str
    kind: InputKind

    def to_item(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "size": self.size,
            "content_type": self.content_type,
            "kind": str(self.kind),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DeclaredInput:
        return cls(
            filename=str(item["filename"]),
            size=int(item["size"]),
            content_type=str(item["content_type"]),
            kind=InputKind(item["kind"]),
        )


@dataclass(frozen=True)
class ResultObject:
    key: str
    size: int
    # The file as its listener hears it (an MP3 measured decoded); None before this
    # was recorded, or when undefined.
    lufs: float | None = None
    true_peak_dbtp: float | None = None

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"key": self.key, "size": self.size}
        for name in ("lufs", "true_peak_dbtp"):
            value = getattr(self, name)
            if value is not None:
                item[name] = to_dynamo(value)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ResultObject:
        lufs, peak = item.get("lufs"), item.get("true_peak_dbtp")
        return cls(
            key=str(item["key"]),
            size=int(item["size"]),
            lufs=None if lufs is None else float(lufs),
            true_peak_dbtp=None if peak is None else float(peak),
        )


@dataclass(frozen=True)
class Job:
    job_id: str
    owner: str
    status: JobStatus
    created_at: str
    updated_at: str
    inputs: dict[InputRole, DeclaredInput]
    outputs: tuple[OutputFormat, ...]
    preset: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    uploaded: frozenset[InputRole] = frozenset()
    stage: Stage = Stage.AWAITING_UPLOAD
    percent: int = 0
    error: dict[str, str] | None = None
    results: dict[ResultName, ResultObject] = field(default_factory=dict)
    metrics: dict[str, float | None] | None = None
    deadline_at: int = 0
    attempt_id: str | None = None
    # How the job-ended webhook went (state, attempts, status_code); internal.
    webhook: dict[str, Any] | None = None
    # The options resolved at creation; loudness_lufs is filled in when a reference
    # job's reference has been measured.
    mastering: MasteringOptions = field(default_factory=MasteringOptions)
    # What a succeeded job did not fully achieve: [{code, message}].
    warnings: tuple[dict[str, str], ...] = ()
    mode: JobMode = JobMode.MASTER
    previews: bool = False
    # The measurements of target, reference and result (DESIGN "analysis"), public form.
    analysis: dict[str, Any] | None = None

    @property
    def required_roles(self) -> frozenset[InputRole]:
        return frozenset(self.inputs)

    @property
    def all_uploaded(self) -> bool:
        return self.required_roles <= self.uploaded

    def to_item(self, ttl: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "job_id": self.job_id,
            "owner": self.owner,
            "owner_key": owner_key(self.owner),
            "status": str(self.status),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "inputs": {str(role): decl.to_item() for role, decl in self.inputs.items()},
            "outputs": [str(fmt) for fmt in self.outputs],
            "metadata": to_dynamo(self.metadata),
            "stage": str(self.stage),
            "percent": self.percent,
            "deadline_at": self.deadline_at,
            "mastering": to_dynamo(self.mastering.to_public()),
            "mode": str(self.mode),
            "previews": self.previews,
            "ttl": ttl,
        }
        if self.preset is not None:
            item["preset"] = self.preset
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
        raw_results = item.get("results") or {}
        metrics = item.get("metrics")
        return cls(
            job_id=str(item["job_id"]),
            owner=str(item.get("owner", "")),
            status=JobStatus(item["status"]),
            created_at=str(item["created_at"]),
            updated_at=str(item["updated_at"]),
            inputs={
                InputRole(role): DeclaredInput.from_item(decl)
                for role, decl in item["inputs"].items()
            },
            outputs=tuple(OutputFormat(fmt) for fmt in item.get("outputs", [])),
            preset=item.get("preset"),
            metadata=from_dynamo(item.get("metadata") or {}),
            uploaded=frozenset(InputRole(role) for role in item.get("uploaded", set())),
            stage=Stage(item.get("stage", Stage.AWAITING_UPLOAD)),
            percent=int(item.get("percent", 0)),
            error=dict(item["error"]) if item.get("error") else None,
            results={
                result_name(name): ResultObject.from_item(obj) for name, obj in raw_results.items()
            },
            metrics=from_dynamo(metrics) if metrics else None,
            deadline_at=int(item.get("deadline_at", 0)),
            attempt_id=item.get("attempt_id"),
            webhook=from_dynamo(item["webhook"]) if item.get("webhook") else None,
            mastering=MasteringOptions.from_public(from_dynamo(item.get("mastering") or {})),
            warnings=tuple(
                {"code": str(w["code"]), "message": str(w["message"])}
                for w in item.get("warnings") or ()
            ),
            mode=JobMode(item.get("mode", JobMode.MASTER)),
            previews=bool(item.get("previews", False)),
            analysis=from_dynamo(item["analysis"]) if item.get("analysis") else None,
        )


def to_dynamo(value: Any) -> Any:
    """DynamoDB has no float type: store numbers as Decimal."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {key: to_dynamo(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(inner) for inner in value]
    return value


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and "." not in str(value):
            return int(value)
        return float(value)
    if isinstance(value, dict):
        return {key: from_dynamo(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [from_dynamo(inner) for inner in value]
    return value
