"""Settings: every value the service reads from its environment, read in one place.

``load_settings`` reads the environment once (a Lambda cold start, a CLI run) into a
frozen ``Settings`` that is then passed down through the ports; nothing else in the
package reads ``os.environ`` (the command line and the local stack excepted, which
build their own). The same names are set by ``template.yaml`` in AWS, by the local
stack and by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mastering.errors import InternalError

MIB = 1024 * 1024
# template.yaml's MasterTimeout default: the master function's own time limit.
DEFAULT_MASTER_TIMEOUT_S = 840
# template.yaml's MaxLiveJobsPerOwner default.
DEFAULT_MAX_LIVE_JOBS_PER_OWNER = 10
_TRUE = frozenset({"1", "true", "yes", "on"})

AddressingStyle = Literal["auto", "virtual", "path"]


@dataclass(frozen=True)
class AwsSettings:
    """How the AWS clients are made (boto3 itself honours ``AWS_ENDPOINT_URL``)."""

    region: str = "us-east-1"
    # Presigned URLs must name the bucket's own regional endpoint (virtual-hosted);
    # an emulator on 127.0.0.1 only understands path-style addressing.
    s3_addressing_style: AddressingStyle = "virtual"
    # Locally the emulator may be reachable from a browser under another address
    # than from the functions; presigned URLs then use this one.
    public_s3_endpoint_url: str | None = None
    # An emulator's address for every service (boto3 would also read AWS_ENDPOINT_URL
    # itself; the local stack passes it here instead of setting the environment).
    endpoint_url: str | None = None
    # (access key id, secret): only for an emulator, which takes any.
    static_credentials: tuple[str, str] | None = None


# The only port a webhook may go to unless the deployment allows others.
DEFAULT_WEBHOOK_PORTS = frozenset({443})


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    # The signing secret itself (local stack, tests) or the SSM parameter holding it.
    secret: str | None = None
    secret_parameter: str | None = None
    # Only the local stack sets this: plain http to 127.0.0.0/8 or ::1.
    allow_loopback: bool = False
    # Ports the URL may name (WEBHOOK_ALLOWED_PORTS); any other is refused.
    allowed_ports: frozenset[int] = DEFAULT_WEBHOOK_PORTS
    # Multiplies the retry schedule's delays (tests and the local stack shorten it).
    retry_scale: float = 1.0


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
    master_timeout_s: int = DEFAULT_MASTER_TIMEOUT_S
    # Jobs one owner may have awaiting upload, queued or processing at once (0: no limit).
    max_live_jobs_per_owner: int = DEFAULT_MAX_LIVE_JOBS_PER_OWNER
    allowed_origins: tuple[str, ...] = ()
    work_dir: Path = field(default_factory=lambda: Path("/tmp"))
    ffmpeg_path: str | None = None
    stage: str = "dev"
    # The API key itself (local stack, tests) or the SSM parameter holding it.
    api_key: str | None = None
    api_key_parameter: str | None = None
    webhook: WebhookSettings | None = None
    # The queue job-ended events wait in until the webhook sender delivers them.
    webhook_queue_url: str | None = None
    aws: AwsSettings = field(default_factory=AwsSettings)


class _Environment:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def text(self, name: str, default: str = "") -> str:
        return self._values.get(name, "").strip() or default

    def optional(self, name: str) -> str | None:
        return self.text(name) or None

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise InternalError(f"service misconfigured: {name} is not set")
        return value

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise InternalError(f"service misconfigured: {name} must be an integer") from exc

    def number(self, name: str, default: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError as exc:
            raise InternalError(f"service misconfigured: {name} must be a number") from exc

    def flag(self, name: str) -> bool:
        return self.text(name).lower() in _TRUE


def _aws(env: _Environment) -> AwsSettings:
    emulated = env.text("AWS_ENDPOINT_URL_S3") or env.text("AWS_ENDPOINT_URL")
    style = env.text("S3_ADDRESSING_STYLE") or ("path" if emulated else "virtual")
    if style not in ("auto", "virtual", "path"):
        raise InternalError("service misconfigured: S3_ADDRESSING_STYLE must be auto|virtual|path")
    return AwsSettings(
        region=env.text("AWS_REGION") or env.text("AWS_DEFAULT_REGION") or "us-east-1",
        s3_addressing_style=style,  # type: ignore[arg-type]
        public_s3_endpoint_url=env.optional("PUBLIC_S3_ENDPOINT_URL"),
        endpoint_url=env.optional("AWS_ENDPOINT_URL"),
    )


def _ports(env: _Environment, name: str, default: frozenset[int]) -> frozenset[int]:
    raw = env.text(name)
    if not raw:
        return default
    try:
        ports = frozenset(int(item) for item in raw.split(",") if item.strip())
    except ValueError:
        ports = frozenset()
    if not ports or not all(0 < port < 65536 for port in ports):
        raise InternalError(
            f"service misconfigured: {name} must be port numbers separated by commas"
        )
    return ports


def _webhook(env: _Environment) -> WebhookSettings | None:
    url = env.text("WEBHOOK_URL")
    if not url:
        return None
    scale = env.number("WEBHOOK_RETRY_SCALE", 1.0)
    if not 0 <= scale <= 1:
        raise InternalError("service misconfigured: WEBHOOK_RETRY_SCALE must be within 0..1")
    return WebhookSettings(
        url=url,
        secret=env.optional("WEBHOOK_SECRET"),
        secret_parameter=env.optional("WEBHOOK_SECRET_PARAMETER"),
        allow_loopback=env.flag("WEBHOOK_ALLOW_LOOPBACK"),
        allowed_ports=_ports(env, "WEBHOOK_ALLOWED_PORTS", DEFAULT_WEBHOOK_PORTS),
        retry_scale=scale,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in ``environ`` (the process environment by default)."""
    env = _Environment(os.environ if environ is None else environ)
    origins = tuple(o.strip() for o in env.text("ALLOWED_ORIGINS").split(",") if o.strip())
    return Settings(
        jobs_table=env.required("JOBS_TABLE"),
        uploads_bucket=env.required("UPLOADS_BUCKET"),
        results_bucket=env.required("RESULTS_BUCKET"),
        max_upload_bytes=env.integer("MAX_UPLOAD_BYTES", 1024 * MIB),
        max_duration_s=env.number("MAX_DURATION_S", 60 * 60.0),
        min_duration_s=env.number("MIN_DURATION_S", 1.0),
        upload_url_ttl_s=env.integer("UPLOAD_URL_TTL_S", 15 * 60),
        result_url_ttl_s=env.integer("RESULT_URL_TTL_S", 60 * 60),
        upload_window_s=env.integer("UPLOAD_WINDOW_S", 60 * 60),
        job_retention_days=env.integer("JOB_RETENTION_DAYS", 30),
        master_timeout_s=env.integer("MASTER_TIMEOUT_S", DEFAULT_MASTER_TIMEOUT_S),
        max_live_jobs_per_owner=env.integer(
            "MAX_LIVE_JOBS_PER_OWNER", DEFAULT_MAX_LIVE_JOBS_PER_OWNER
        ),
        allowed_origins=origins,
        work_dir=Path(env.text("WORK_DIR", "/tmp")),
        ffmpeg_path=env.optional("FFMPEG_PATH"),
        stage=env.text("STAGE", "dev"),
        api_key=env.optional("API_KEY"),
        api_key_parameter=env.optional("API_KEY_PARAMETER"),
        webhook=_webhook(env),
        webhook_queue_url=env.optional("WEBHOOK_QUEUE_URL"),
        aws=_aws(env),
    )
