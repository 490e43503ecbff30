"""Job lifecycle function: the master function's on-failure destination and a
scheduled sweep.

- An async-invocation failure record (Lambda destination) carries the S3 event
  the master function died on; its jobs are failed with the reason Lambda gave.
- An EventBridge scheduled event runs the sweep: uploads that never completed
  expire, jobs that overran the master's timeout fail.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import SERVICE_NAME
from mastering.config import Settings, load_settings
from mastering.jobs.store import DynamoJobStore
from mastering.storage.keys import parse_upload_key
from mastering.storage.objects import S3Storage
from mastering.worker.lifecycle import LifecyclePorts, fail_abandoned, sweep

logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)


_ports: LifecyclePorts | None = None


def configure(settings: Settings | None = None) -> LifecyclePorts:
    """Build the function's ports from ``settings`` (the environment's by default):
    once per container on Lambda; the local stack and the tests pass their own."""
    global _ports
    settings = settings or load_settings()
    store = DynamoJobStore(
        settings.jobs_table, aws=settings.aws, retention_days=settings.job_retention_days
    )
    _ports = LifecyclePorts(settings=settings, store=store, storage=S3Storage(settings.aws))
    return _ports


def ports() -> LifecyclePorts:
    return _ports or configure()


def _job_ids_of(s3_event: dict[str, Any]) -> list[str]:
    job_ids = []
    for record in s3_event.get("Records", []):
        key = unquote_plus(record.get("s3", {}).get("object", {}).get("key", ""))
        parsed = parse_upload_key(key)
        if parsed is not None:
            job_ids.append(parsed.job_id)
    return job_ids


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "requestPayload" in event and "requestContext" in event:
        # Lambda async-invocation destination record.
        response = event.get("responsePayload") or {}
        error_message = str(
            response.get("errorMessage") or event["requestContext"].get("condition", "")
        )
        job_ids = _job_ids_of(event.get("requestPayload") or {})
        ended = fail_abandoned(job_ids, error_message, ports=ports())
        logger.info("master failure handled", extra={"jobs": job_ids, "failed": ended})
        return {"failed": ended}
    report = sweep(ports=ports())
    logger.info("sweep done", extra={"expired": report.expired, "failed": report.failed})
    return {"expired": report.expired, "failed": report.failed}
