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

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import SERVICE_NAME
from mastering.config import load_settings
from mastering.jobs.model import JobStatus
from mastering.jobs.store import DynamoJobStore
from mastering.notify.job_events import notifier_from_env
from mastering.storage.objects import S3Storage
from mastering.worker.runner import (
    UploadNotice,
    WorkerPorts,
    accept_upload,
    clean_stale_work_dirs,
    run_job,
)

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(service=SERVICE_NAME)


def _ports(context: LambdaContext) -> WorkerPorts:
    settings = load_settings()
    # numba (pulled in by resampy) and matplotlib want a writable cache: only /tmp is.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.work_dir / "numba-cache"))
    timeout_s = int(os.environ.get("MASTER_TIMEOUT_S") or 900)
    store = DynamoJobStore(settings.jobs_table)
    storage = S3Storage()
    return WorkerPorts(
        settings=settings,
        store=store,
        storage=storage,
        master_timeout_s=timeout_s,
        notifier=notifier_from_env(settings, storage, store),
    )


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=S3Event)
def handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    ports = _ports(context)
    clean_stale_work_dirs(ports.settings.work_dir)
    outcomes: dict[str, str] = {}
    for record in event.records:
        notice = UploadNotice(
            bucket=record.s3.bucket.name,
            key=record.s3.get_object.key,
            size=record.s3.get_object.size,
        )
        job = accept_upload(notice, ports=ports)
        if job is None:
            continue
        logger.append_keys(job_id=job.job_id)
        finished = run_job(
            job,
            remaining_s=lambda: context.get_remaining_time_in_millis() / 1000.0,
            ports=ports,
        )
        outcomes[finished.job_id] = str(finished.status)
        name = "JobsSucceeded" if finished.status is JobStatus.SUCCEEDED else "JobsFailed"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    return {"jobs": outcomes}
