"""Webhook sender function: the webhook queue → signed POSTs to the deployment's
webhook URL.

Invoked with small batches of queued job-ended events. Each gets one delivery
attempt (``mastering.notify.delivery``); one that failed in a way worth retrying
is hidden until its next attempt of the Standard Webhooks schedule and reported
back (ReportBatchItemFailures), so Lambda leaves it on the queue. After the last
attempt the queue's redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import SERVICE_NAME
from mastering.config import Settings, load_settings
from mastering.errors import InternalError
from mastering.jobs.store import DynamoJobStore
from mastering.notify.delivery import RetryLater, SenderPorts, deliver
from mastering.notify.events import JobEnded, NotAnEvent
from mastering.notify.queue import SqsEventQueue
from mastering.notify.webhooks import ATTEMPT_TIMEOUT_S, WebhookTarget, webhook_target
from mastering.storage.objects import S3Storage

logger = Logger(service=SERVICE_NAME)
# A receiver that is down fails every event of a batch: that is a retry for each of
# them, not an error of the function.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# An attempt is not started with less time than this left: it could not finish.
_ATTEMPT_RESERVE_MS = int((ATTEMPT_TIMEOUT_S + 5) * 1000)

_ports: SenderPorts | None = None


def configure(settings: Settings | None = None) -> SenderPorts:
    """Build the function's ports from ``settings`` (the environment's by default):
    once per container on Lambda; the local stack and the tests pass their own."""
    global _ports
    settings = settings or load_settings()
    if not settings.webhook_queue_url:
        raise InternalError("service misconfigured: WEBHOOK_QUEUE_URL is not set")
    configured = settings

    def target() -> WebhookTarget | None:
        # Read per attempt: the secret parameter is cached for 5 minutes by Powertools.
        return webhook_target(configured)

    _ports = SenderPorts(
        settings=settings,
        store=DynamoJobStore(
            settings.jobs_table, aws=settings.aws, retention_days=settings.job_retention_days
        ),
        links=S3Storage(settings.aws),
        queue=SqsEventQueue(settings.webhook_queue_url, aws=settings.aws),
        target=target,
    )
    return _ports


def _record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    try:
        event = JobEnded.from_message(record.body)
    except NotAnEvent as error:
        # Nothing could ever deliver it: let it go, with a trace.
        logger.error("dropping a queue message", extra={"reason": str(error)})
        return
    if lambda_context.get_remaining_time_in_millis() < _ATTEMPT_RESERVE_MS:
        # Back after the queue's visibility timeout (this receive counts as an attempt).
        raise RetryLater("no time left in this invocation")
    try:
        deliver(
            event,
            receipt_handle=record.receipt_handle,
            attempt=int(record.attributes.approximate_receive_count),
            ports=_ports or configure(),
        )
    except RetryLater:
        raise
    except Exception:
        # Unforeseen: the message comes back after the queue's visibility timeout.
        logger.exception("webhook delivery crashed", extra={"job_id": event.job_id})
        raise


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=_record, processor=processor, context=context
        )
    )
