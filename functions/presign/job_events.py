"""Job-events function: the jobs table's stream → the webhook queue.

Invoked with batches of stream records, already filtered by the event source
mapping to jobs that moved into a terminal status (template.yaml FilterCriteria).
For each job that just ended it queues one job-ended event for the webhook sender
and deletes the job's uploads (``mastering.notify.relay``). A record whose event
could not be queued is reported back (ReportBatchItemFailures), so Lambda retries
from it; the others are done.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import SERVICE_NAME
from mastering.config import Settings, load_settings
from mastering.errors import InternalError
from mastering.notify.queue import SqsEventQueue
from mastering.notify.relay import RelayPorts, relay
from mastering.storage.objects import S3Storage

logger = Logger(service=SERVICE_NAME)
# Every record failing is the function's usual answer when SQS is down, not a crash:
# each is reported back like any other failure.
processor = BatchProcessor(
    event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False
)

_ports: RelayPorts | None = None


def configure(settings: Settings | None = None) -> RelayPorts:
    """Build the function's ports from ``settings`` (the environment's by default):
    once per container on Lambda; the local stack and the tests pass their own."""
    global _ports
    settings = settings or load_settings()
    if not settings.webhook_queue_url:
        raise InternalError("service misconfigured: WEBHOOK_QUEUE_URL is not set")
    _ports = RelayPorts(
        settings=settings,
        queue=SqsEventQueue(settings.webhook_queue_url, aws=settings.aws),
        storage=S3Storage(settings.aws),
    )
    return _ports


def _record(record: DynamoDBRecord) -> None:
    try:
        relay(record.raw_event, ports=_ports or configure())
    except Exception:
        # Reported back as failed, so Lambda retries from this record.
        logger.exception("could not queue a job's ending", extra={"event_id": record.event_id})
        raise


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=_record, processor=processor, context=context
        )
    )
