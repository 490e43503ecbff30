"""Master function: S3 ObjectCreated on the uploads bucket → mastered results.

Thin on purpose: parse the S3 event, then for each record hand the upload to the
domain (``mastering.worker.runner``), which decides whether a job is ready and
runs it to a terminal state. Heavy modules (numpy, the engine) load only when a
job actually runs, so this module imports fast on a cold start.

No Powertools Tracer here, unlike the presign function: the X-Ray SDK costs about
0.2 s of every cold start (importing it builds X-Ray API clients for centralised
sampling, which Lambda, deciding sampling itself, never uses), and what it would add
here is little. The mastering runs in a forked child, outside the SDK's segment
context, leaving only a handful of S3/DynamoDB calls to trace; the function's
active tracing (template Globals) still records each invocation, its init and
duration, and job stages and timings are in the logs, the metrics and the job.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import METRICS_NAMESPACE, SERVICE_NAME
from mastering.config import Settings, load_settings
from mastering.jobs.model import JobStatus
from mastering.jobs.store import DynamoJobStore
from mastering.storage.objects import S3Storage
from mastering.worker.runner import (
    UploadNotice,
    WorkerPorts,
    accept_upload,
    clean_stale_work_dirs,
    run_job,
)

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(service=SERVICE_NAME, namespace=METRICS_NAMESPACE)


_ports: WorkerPorts | None = None


# A cancel is the user's choice, not a failure, so it must not count as JobsFailed
# (the presign function already counts the cancel request itself as JobsCancelled).
_OUTCOME_METRICS = {
    JobStatus.SUCCEEDED: "JobsSucceeded",
    JobStatus.FAILED: "JobsFailed",
    JobStatus.CANCELLED: "JobsStoppedByCancel",
    JobStatus.EXPIRED: "JobsExpired",
}


def configure(settings: Settings | None = None, **replaced: Any) -> WorkerPorts:
    """Build the function's ports from ``settings`` (the environment's by default).

    Lambda's first invocation does it once per container (the cold start); the local
    stack and the tests call it with settings of their own, and tests may replace a
    port (``isolate=run_inline``).
    """
    global _ports
    settings = settings or load_settings()
    store = DynamoJobStore(
        settings.jobs_table, aws=settings.aws, retention_days=settings.job_retention_days
    )
    _ports = WorkerPorts(settings=settings, store=store, storage=S3Storage(settings.aws))
    if replaced:
        _ports = dataclasses.replace(_ports, **replaced)
    return _ports


def ports() -> WorkerPorts:
    return _ports or configure()


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=S3Event)
def handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    current = ports()
    clean_stale_work_dirs(current.settings.work_dir)
    outcomes: dict[str, str] = {}
    for record in event.records:
        notice = UploadNotice(
            bucket=record.s3.bucket.name,
            key=record.s3.get_object.key,
            size=record.s3.get_object.size,
        )
        job = accept_upload(notice, ports=current)
        if job is None:
            continue
        logger.append_keys(job_id=job.job_id)
        finished = run_job(
            job,
            remaining_s=lambda: context.get_remaining_time_in_millis() / 1000.0,
            ports=current,
        )
        outcomes[finished.job_id] = str(finished.status)
        metric = _OUTCOME_METRICS.get(finished.status)
        if metric:
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return {"jobs": outcomes}
