"""The job-events and webhook-sender functions under the Lambda runtime emulator, fed
the events of events/ (a stream record of a job that succeeded, a queued event)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.conftest import Stack, emulated_s3, load_event
from tests.http_receiver import receiving_posts
from tests.runtime.conftest import RuntimeFactory
from tests.runtime.rie import Runtime, snapshot

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"spectrum-test-webhook-secret-32b").decode()
JOB = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"  # the job of the files in events/


class Receiver:
    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    def answer(headers: dict[str, str], body: bytes) -> int:
        state.requests.append((headers, body))
        return state.answers.pop(0) if state.answers else 204

    with receiving_posts(answer) as port:
        state.port = port
        yield state


@pytest.fixture
def job_events(lambda_runtime: RuntimeFactory, stack: Stack) -> Runtime:
    return lambda_runtime(
        "presign",
        "job_events.handler",
        timeout_s=60,
        memory_mb=256,
        extra_env={"WEBHOOK_QUEUE_URL": stack.queues.events.url},
    )


@pytest.fixture
def sender(lambda_runtime: RuntimeFactory, stack: Stack, receiver: Receiver) -> Runtime:
    return lambda_runtime(
        "presign",
        "webhook_sender.handler",
        timeout_s=90,
        memory_mb=256,
        extra_env={
            "WEBHOOK_QUEUE_URL": stack.queues.events.url,
            "WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/ai-mastering-webhook",
            "WEBHOOK_SECRET": SECRET,
            # What the local stack sets; deployed code refuses loopback and this port.
            "WEBHOOK_ALLOW_LOOPBACK": "1",
            "WEBHOOK_ALLOWED_PORTS": str(receiver.port),
        },
    )


def _queue(stack: Stack) -> Any:
    from mastering import clients

    return clients.sqs_client(stack.settings.aws)


def test_a_job_that_succeeded_is_queued_once_and_its_uploads_deleted(
    job_events: Runtime, stack: Stack
) -> None:
    # Given the job of events/ with both its uploads still in the bucket
    s3 = emulated_s3()
    for role in ("target", "reference"):
        s3.put_object(Bucket=stack.settings.uploads_bucket, Key=f"uploads/{JOB}/{role}", Body=b"x")
    code_before = snapshot(job_events.task_root)
    # When the stream record of its ending reaches the function
    result, _ = job_events.invoke(load_event("job-events-succeeded.json"))
    # Then no record failed, one job.succeeded event waits on the queue, and the
    # uploads are gone
    assert result == {"batchItemFailures": []}, job_events.log_tail()
    messages = _queue(stack).receive_message(
        QueueUrl=stack.queues.events.url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    assert [json.loads(m["Body"])["id"] for m in messages] == [f"msg_{JOB}_succeeded"]
    listing = s3.list_objects_v2(Bucket=stack.settings.uploads_bucket, Prefix=f"uploads/{JOB}/")
    assert listing.get("KeyCount", 0) == 0
    # And the function wrote nothing next to its code
    assert snapshot(job_events.task_root) == code_before


def test_a_queued_event_is_delivered_signed_or_left_for_its_next_attempt(
    sender: Runtime, stack: Stack, receiver: Receiver
) -> None:
    # Given the queued event of events/, for a job no longer in the table
    event = load_event("webhook-sender-event.json")
    # When the sender gets it and the receiver takes it
    result, _ = sender.invoke(event)
    # Then it was delivered, signed, as the job ended
    assert result == {"batchItemFailures": []}, sender.log_tail()
    ((headers, body),) = receiver.requests
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert headers["webhook-id"] == f"msg_{JOB}_succeeded"
    assert set(payload["data"]["results"]) == {"wav16", "mp3"}
    assert payload["data"]["results"]["wav16"]["url"].startswith(stack.endpoint)

    # Given the same event really on the queue, and a receiver answering 503
    sqs = _queue(stack)
    sqs.send_message(QueueUrl=stack.queues.events.url, MessageBody=event["Records"][0]["body"])
    (message,) = sqs.receive_message(
        QueueUrl=stack.queues.events.url, MessageSystemAttributeNames=["All"]
    )["Messages"]
    retry = copy.deepcopy(event)
    retry["Records"][0].update(
        messageId=message["MessageId"],
        receiptHandle=message["ReceiptHandle"],
        attributes=message["Attributes"],
    )
    receiver.answers = [503]
    # When the sender tries it
    result, _ = sender.invoke(retry)
    # Then it reports that message failed, so Lambda leaves it on the queue, hidden
    # until its next attempt
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert len(receiver.requests) == 2
    hidden = sqs.receive_message(QueueUrl=stack.queues.events.url, WaitTimeSeconds=0)
    assert hidden.get("Messages", []) == []
