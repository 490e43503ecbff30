"""The webhook queue (SQS): the only module of ``notify`` that talks to AWS."""

from __future__ import annotations

from typing import Protocol

from mastering import clients
from mastering.config import AwsSettings
from mastering.notify.events import JobEnded


class EventQueue(Protocol):
    """Where job-ended events wait for the webhook sender."""

    def send(self, event: JobEnded) -> None: ...

    def retry_in(self, receipt_handle: str, seconds: int) -> None:
        """Let a received message come back after ``seconds`` (its next attempt)."""
        ...


class SqsEventQueue:
    def __init__(self, queue_url: str, *, aws: AwsSettings) -> None:
        self._queue_url = queue_url
        self._aws = aws

    def send(self, event: JobEnded) -> None:
        clients.sqs_client(self._aws).send_message(
            QueueUrl=self._queue_url, MessageBody=event.to_message()
        )

    def retry_in(self, receipt_handle: str, seconds: int) -> None:
        clients.sqs_client(self._aws).change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
