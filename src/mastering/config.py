"""Settings, read from the environment each time they are asked for.

The same names are set by ``template.yaml`` in AWS, by the local stack and by the
tests, so one code path serves all three. Reading at call time (not import time)
lets tests change the environment per case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mastering.errors import InternalError

MIB = 1024 * 1024


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InternalError(f"service misconfigured: {name} must be an integer") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise InternalError(f"service misconfigured: {name} must be a number") from exc


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise InternalError(f"service misconfigured: {name} is not set")
    return value


@dataclass(frozen=True)
class Settings:
    jobs_table: str
    uploads_bucket: str
    results_bucket: str
    max_upload_bytes: int = 1024 * MIB
    max_duration_s: float = 60 * 60.0
    min_duration_s: float = 1.0
    upload_url_ttl_s: int = 15 * 60
    result_url_ttl_s: int = 60 * 60
    # An awaiting_upload job expires this long after creation.
    upload_window_s: int = 60 * 60
    # Job records are deleted by DynamoDB TTL this long after their last change.
    job_retention_days: int = 30
    allowed_origins: tuple[str, ...] = ()
    work_dir: Path = field(default_factory=lambda: Path("/tmp"))
    ffmpeg_path: str | None = None
    stage: str = "dev"


def load_settings() -> Settings:
    origins = tuple(
        origin.strip()
        for origin in os.environ.get("ALLOWED_ORIGINS", "").split(",")
        if origin.strip()
    )
    return Settings(
        jobs_table=_required("JOBS_TABLE"),
        uploads_bucket=_required("UPLOADS_BUCKET"),
        results_bucket=_required("RESULTS_BUCKET"),
        max_upload_bytes=_int("MAX_UPLOAD_BYTES", 1024 * MIB),
        max_duration_s=_float("MAX_DURATION_S", 60 * 60.0),
        min_duration_s=_float("MIN_DURATION_S", 1.0),
        upload_url_ttl_s=_int("UPLOAD_URL_TTL_S", 15 * 60),
        result_url_ttl_s=_int("RESULT_URL_TTL_S", 60 * 60),
        upload_window_s=_int("UPLOAD_WINDOW_S", 60 * 60),
        job_retention_days=_int("JOB_RETENTION_DAYS", 30),
        allowed_origins=origins,
        work_dir=Path(os.environ.get("WORK_DIR", "/tmp")),
        ffmpeg_path=os.environ.get("FFMPEG_PATH") or None,
        stage=os.environ.get("STAGE", "dev"),
    )
