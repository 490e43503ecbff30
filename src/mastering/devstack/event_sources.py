"""Lambda's event source mappings, emulated against moto: the jobs table's stream
feeding the job-events function, and the webhook queue feeding the webhook sender.

Each source is polled by a thread of the local stack (``LocalStack``), and hands
its function the event Lambda would: the same records in the same shape, the same
filter (``notify.events.STREAM_FILTER_PATTERN``, matched with moto's own
implementation of EventBridge patterns, the syntax Lambda's filters use), and the
same reading of a partial batch response (``batchItemFailures``). What is left out:
several shards (moto's stream has one), parallel batches, and bisecting a failed
batch (a failed record is retried together with those after it, as Lambda does
with ReportBatchItemFailures).
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mastering.devstack.handlers import REGION

logger = logging.getLogger("mastering.devstack.events")

Invoke = Callable[[dict[str, Any]], Any]

# template.yaml: the job-events function's DynamoDB event, the sender's SQS event.
STREAM_BATCH_SIZE = 100
STREAM_MAX_RECORD_AGE_S = 86_400
QUEUE_BATCH_SIZE = 5
# Between retries of a failed stream batch, so a broken function does not spin.
_STREAM_RETRY_WAIT_S = 1.0


def _failed_identifiers(response: Any) -> list[str]:
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    return [str(f.get("itemIdentifier")) for f in failures or [] if isinstance(f, dict)]


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0)


class StreamSource:
    """A DynamoDB stream → ``invoke`` with ``{"Records": [...]}`` of matching records."""

    def __init__(
        self,
        *,
        streams: Any,
        stream_arn: str,
        invoke: Invoke,
        pattern: dict[str, Any],
        on_failure: Callable[[dict[str, Any]], None],
        function_arn: str,
        batch_size: int = STREAM_BATCH_SIZE,
        max_record_age_s: float = STREAM_MAX_RECORD_AGE_S,
    ) -> None:
        from moto.events.models import EventPattern

        self._streams = streams
        self._stream_arn = stream_arn
        self._invoke = invoke
        matcher = EventPattern(None, pattern)
        # moto types the event as an EventBridge event; any JSON object matches alike.
        self._matches: Callable[[dict[str, Any]], bool] = lambda record: bool(
            matcher.matches_event(record)  # type: ignore[arg-type]
        )
        self._on_failure = on_failure
        self._function_arn = function_arn
        self._batch_size = batch_size
        self._max_record_age_s = max_record_age_s
        self._shard: str | None = None
        self._position = 0
        # Read from the stream, not yet handled: a failed batch is retried from here.
        self._pending: list[dict[str, Any]] = []
        self._invocations = 0

    def _read(self) -> list[dict[str, Any]]:
        # The position is counted here, not taken from NextShardIterator: moto numbers
        # a record by the stream's length when it is added, so two writes at once (a
        # worker's progress and a cancel, say) can share a number, and its next
        # iterator (after the highest number read) would then hand records out again.
        # Its records sit at index = number - the shard's first number, which is what
        # AT_SEQUENCE_NUMBER reads: counting records read never repeats one.
        if self._shard is None:
            description = self._streams.describe_stream(StreamArn=self._stream_arn)
            (shard,) = description["StreamDescription"]["Shards"]
            self._shard = str(shard["ShardId"])
            self._position = int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        iterator = self._streams.get_shard_iterator(
            StreamArn=self._stream_arn,
            ShardId=self._shard,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=str(self._position),
        )["ShardIterator"]
        records = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size).get(
            "Records", []
        )
        self._position += len(records)
        return [self._as_lambda_sends(record) for record in records]

    def _as_lambda_sends(self, record: dict[str, Any]) -> dict[str, Any]:
        shaped = copy.deepcopy(record)
        change = shaped.setdefault("dynamodb", {})
        change["ApproximateCreationDateTime"] = _epoch(change.get("ApproximateCreationDateTime"))
        shaped["eventVersion"] = "1.1"
        shaped["eventSourceARN"] = self._stream_arn
        return shaped

    def poll(self) -> int:
        """Read what is new (or retry what failed); returns the records handed over."""
        if not self._pending:
            self._pending = self._read()
        batch = [record for record in self._pending if self._matches(record)]
        if not batch:
            self._pending = []
            return 0
        self._invocations += 1
        try:
            failed = _failed_identifiers(self._invoke({"Records": batch}))
        except Exception:
            logger.exception("the job-events function failed; its batch is retried")
            failed = [batch[0]["dynamodb"]["SequenceNumber"]]
        if not failed:
            self._pending, self._invocations = [], 0
            return len(batch)
        first_failed = min(int(sequence) for sequence in failed)
        self._pending = [
            record
            for record in self._pending
            if int(record["dynamodb"]["SequenceNumber"]) >= first_failed
        ]
        oldest = _epoch(self._pending[0]["dynamodb"].get("ApproximateCreationDateTime"))
        if time.time() - oldest > self._max_record_age_s:
            self._give_up("RecordAgeExceeded")
        else:
            time.sleep(_STREAM_RETRY_WAIT_S)
        return len(batch)

    def _give_up(self, condition: str) -> None:
        """Report the batch to the on-failure destination, as Lambda does, and move on."""
        first, last = self._pending[0]["dynamodb"], self._pending[-1]["dynamodb"]
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self._function_arn,
                "condition": condition,
                "approximateInvokeCount": self._invocations,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "DDBStreamBatchInfo": {
                "shardId": "local",
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "batchSize": len(self._pending),
                "streamArn": self._stream_arn,
            },
        }
        logger.error("stream records given up on (%s); reported", condition)
        self._on_failure(record)
        self._pending, self._invocations = [], 0


class QueueSource:
    """An SQS queue → ``invoke`` with ``{"Records": [...]}``; what the function does not
    report as failed is deleted, what it does stays (to come back when visible)."""

    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        invoke: Invoke,
        batch_size: int = QUEUE_BATCH_SIZE,
        wait_s: int = 1,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._invoke = invoke
        self._batch_size = batch_size
        self._wait_s = wait_s

    def _as_lambda_sends(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": REGION,
        }

    def poll(self) -> int:
        """Receive a batch and hand it over; returns the number of messages."""
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_s,
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        records = [self._as_lambda_sends(message) for message in messages]
        try:
            failed = set(_failed_identifiers(self._invoke({"Records": records})))
        except Exception:
            # As Lambda: the whole batch comes back after its visibility timeout.
            logger.exception("the webhook sender failed; its batch stays on the queue")
            return len(records)
        done = [record for record in records if record["messageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                    for index, record in enumerate(done)
                ],
            )
        return len(records)
