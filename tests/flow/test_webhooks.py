"""Signed webhooks when a job ends, through the path they take in AWS: the job's
terminal write → the jobs table's stream → the job-events function → the webhook
queue → the webhook sender → the receiver, with retries from the queue.

The functions run in this process against the moto server of ``tests/conftest.py``;
the stream and the queue are polled as Lambda's event source mappings would
(``mastering.devstack.event_sources``, the local stack's own pollers).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.audio_factory import tone_mix, write_wav
from tests.conftest import (
    ApiClient,
    FakeLambdaContext,
    Stack,
    emulated_s3,
    load_event,
    load_handler,
    s3_event_for,
)
from tests.http_receiver import receiving_posts
from tests.jobflow import create_and_upload, deliver

SECRET = "whsec_" + base64.b64encode(b"spectrum-test-webhook-secret-32b").decode()
RATE = 44_100
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Receiver:
    """A local webhook endpoint that records requests and answers from a script."""

    url: str
    port: int = 0
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # Seconds to stall before answering (a receiver that hangs).
    stall_s: float = 0.0
    arrived: list[float] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.requests]

    def payload(self, index: int = -1) -> dict[str, Any]:
        headers, body = self.requests[index]
        verified: dict[str, Any] = Webhook(SECRET).verify(body, headers)
        return verified


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    release = threading.Event()

    def answer(headers: dict[str, str], body: bytes) -> int:
        state.arrived.append(time.monotonic())
        state.requests.append((headers, body))
        if state.stall_s:
            release.wait(state.stall_s)
        return state.answers.pop(0) if state.answers else 204

    with receiving_posts(answer) as port:
        state.port = port
        state.url = f"http://127.0.0.1:{port}/webhooks/mastering"
        try:
            yield state
        finally:
            # A stalled answer must not hold the server's shutdown.
            release.set()


@dataclass
class Events:
    """The two event source mappings, polled when a test says so."""

    stack: Stack
    stream: Any
    queue: Any

    def relay(self) -> int:
        """Hand every new terminal write to the job-events function; how many."""
        handled = total = self.stream.poll()
        while handled:
            handled = self.stream.poll()
            total += handled
        return total

    def send(self) -> int:
        """One receive of the webhook sender's event source; the messages it got."""
        received: int = self.queue.poll()
        return received

    def dead_letters(self) -> list[str]:
        sqs = emulated_sqs(self.stack)
        # A peek: received with no visibility timeout, the messages stay visible.
        response = sqs.receive_message(
            QueueUrl=self.stack.queues.dead_letters.url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return [str(m["Body"]) for m in response.get("Messages", [])]


def emulated_sqs(stack: Stack) -> Any:
    from mastering import clients

    return clients.sqs_client(stack.settings.aws)


def _invoker(module: str, timeout_s: float) -> Callable[[dict[str, Any]], Any]:
    handler = load_handler("presign", module).handler

    def invoke(event: dict[str, Any]) -> Any:
        return handler(event, FakeLambdaContext(timeout_s, module))

    return invoke


def _events(stack: Stack) -> Events:
    from mastering import clients
    from mastering.devstack.event_sources import QueueSource, StreamSource
    from mastering.devstack.resources import jobs_stream_arn
    from mastering.notify.events import STREAM_FILTER_PATTERN

    aws = stack.settings.aws
    failures: list[dict[str, Any]] = []
    stream = StreamSource(
        streams=clients.dynamodb_streams_client(aws),
        stream_arn=jobs_stream_arn(stack.settings),
        invoke=_invoker("job_events", 60),
        pattern=STREAM_FILTER_PATTERN,
        on_failure=failures.append,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:job-events",
    )
    queue = QueueSource(
        sqs=emulated_sqs(stack),
        queue_url=stack.queues.events.url,
        queue_arn=stack.queues.events.arn,
        invoke=_invoker("webhook_sender", 90),
        wait_s=0,
    )
    return Events(stack, stream, queue)


def _configure(stack: Stack, url: str, *, ports: set[int], retry_scale: float = 1.0) -> None:
    from mastering.config import WebhookSettings

    stack.configure(
        webhook=WebhookSettings(
            url=url,
            secret=SECRET,
            allow_loopback=True,
            allowed_ports=frozenset(ports),
            retry_scale=retry_scale,
        )
    )


@pytest.fixture
def events(stack: Stack, receiver: Receiver) -> Events:
    _configure(stack, receiver.url, ports={receiver.port})
    return _events(stack)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    target = write_wav(tmp_path / "t.wav", tone_mix(6.0, RATE, seed=21, peak_dbfs=-15), RATE)
    reference = write_wav(tmp_path / "r.wav", tone_mix(6.0, RATE, seed=22, peak_dbfs=-1), RATE)
    return target, reference


def _uploads_left(stack: Stack, job_id: str) -> list[str]:
    listing = emulated_s3().list_objects_v2(
        Bucket=stack.settings.uploads_bucket, Prefix=f"uploads/{job_id}/"
    )
    return [str(obj["Key"]) for obj in listing.get("Contents", [])]


def _waiting_job(api: ApiClient, tmp_path: Path) -> tuple[str, dict[str, int]]:
    """A job whose target is uploaded but whose S3 event has not been handled."""
    target, _ = _files(tmp_path)
    return create_and_upload(api, target, None, preset="warm")


def _delivered_once(receiver: Receiver, events: Events, job_id: str, event_type: str) -> Any:
    """Relay and send; exactly one signed event of that type came, and nothing more."""
    assert events.relay() == 1
    assert events.send() == 1
    assert events.relay() == 0
    assert events.send() == 0
    assert len(receiver.requests) == 1, receiver.ids()
    payload = receiver.payload()
    assert payload["type"] == event_type
    assert payload["data"]["job_id"] == job_id
    assert receiver.ids() == [f"msg_{job_id}_{event_type.removeprefix('job.')}"]
    return payload["data"]


# ---------------------------------------------------------------- one event per ending


@pytest.mark.slow
def test_a_succeeded_job_sends_one_signed_event_with_the_job_body(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    receiver: Receiver,
    events: Events,
    tmp_path: Path,
) -> None:
    # Given a deployment with a webhook, and a job whose files are uploaded
    target, reference = _files(tmp_path)
    job_id, sizes = create_and_upload(api, target, reference)
    # When the master runs it
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    # Then the master itself sent nothing
    assert receiver.requests == []
    # And through the stream and the queue one job.succeeded arrives, signed, whose
    # data is the GET /jobs body, result URLs included
    data = _delivered_once(receiver, events, job_id, "job.succeeded")
    current = api.call("GET", f"/jobs/{job_id}").body
    assert data["status"] == "succeeded"
    assert data["metrics"] == current["metrics"]
    assert set(data["results"]) == {"wav16"}
    assert data["results"]["wav16"]["url"].startswith("http")
    assert receiver.requests[0][0]["webhook-signature"].startswith("v1,")
    # And the job's uploads are gone, its results kept
    assert _uploads_left(stack, job_id) == []
    assert current["results"]["wav16"]["size"] > 0
    # And how the webhook went is noted on the job
    job = stack.store().get(job_id)
    assert job is not None
    assert job.webhook == {"state": "delivered", "status_code": 204, "attempts": 1}


def test_a_failed_job_sends_job_failed_with_its_error(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    receiver: Receiver,
    events: Events,
    tmp_path: Path,
) -> None:
    # Given a job whose target is not audio
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"not audio at all\n" * 100)
    job_id, sizes = create_and_upload(api, notes, None, preset="warm")
    # When it runs
    deliver(invoke_master, job_id, "target", sizes["target"])
    # Then one job.failed arrives with the error code, and the upload is deleted
    data = _delivered_once(receiver, events, job_id, "job.failed")
    assert data["error"]["code"] == "invalid_audio"
    assert _uploads_left(stack, job_id) == []


def test_an_expired_job_sends_job_expired(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events
) -> None:
    # Given a job whose uploads never came, past its upload window
    window = stack.settings.upload_window_s
    stack.configure(upload_window_s=0)
    created = api.call(
        "POST",
        "/jobs",
        body={
            "target": {"filename": "a.wav", "size": 1000, "content_type": "audio/wav"},
            "preset": "warm",
        },
    )
    stack.configure(upload_window_s=window)
    job_id = created.body["job_id"]
    # When the lifecycle function's sweep runs
    sweep = load_handler("presign", "lifecycle").handler(
        load_event("lifecycle-schedule.json"), FakeLambdaContext(60, "lifecycle")
    )
    assert sweep["expired"] == [job_id]
    # Then one job.expired arrives, saying why
    data = _delivered_once(receiver, events, job_id, "job.expired")
    assert data["error"]["code"] == "upload_expired"


def test_a_cancelled_job_deleted_meanwhile_still_sends_job_cancelled(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events, tmp_path: Path
) -> None:
    from mastering.jobs.model import JobStatus, Stage

    # Given a waiting job that is cancelled, then deleted before its event is sent
    job_id, _ = _waiting_job(api, tmp_path)
    store = stack.store()
    cancelled = store.transition(
        job_id,
        JobStatus.AWAITING_UPLOAD,
        JobStatus.CANCELLED,
        now=NOW,
        stage=Stage.CANCELLED,
        percent=0,
    )
    assert cancelled is not None
    assert events.relay() == 1
    store.delete(job_id)
    # When the sender gets to it
    assert events.send() == 1
    # Then the receiver still hears of it, as the job was when it ended
    assert receiver.ids() == [f"msg_{job_id}_cancelled"]
    payload = receiver.payload()
    assert payload["type"] == "job.cancelled"
    assert payload["data"]["status"] == "cancelled"
    assert _uploads_left(stack, job_id) == []


def test_a_master_that_died_sends_job_failed_through_the_lifecycle_function(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events, tmp_path: Path
) -> None:
    from mastering.jobs.model import JobStatus, Stage

    # Given a job in processing whose master invocation timed out
    job_id, _ = _waiting_job(api, tmp_path)
    store = stack.store()
    for old, new, stage in (
        (JobStatus.AWAITING_UPLOAD, JobStatus.QUEUED, Stage.QUEUED),
        (JobStatus.QUEUED, JobStatus.PROCESSING, Stage.MATCHING),
    ):
        assert store.transition(job_id, old, new, now=NOW, stage=stage, percent=40)
    record = load_event("lifecycle-master-failure.json")
    record["requestPayload"] = s3_event_for(f"uploads/{job_id}/target", 1000)
    # When the lifecycle function handles the failure
    load_handler("presign", "lifecycle").handler(record, FakeLambdaContext(60, "lifecycle"))
    # Then one job.failed arrives with processing_timeout
    data = _delivered_once(receiver, events, job_id, "job.failed")
    assert data["error"]["code"] == "processing_timeout"


# ---------------------------------------------------------------- nobody waits, nothing lost


@pytest.mark.slow
def test_the_master_never_waits_on_a_receiver_that_hangs(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    receiver: Receiver,
    events: Events,
    tmp_path: Path,
) -> None:
    # Given a receiver that would hang for a minute on every request
    receiver.stall_s = 60.0
    target, _ = _files(tmp_path)
    job_id, sizes = create_and_upload(api, target, None, preset="warm")
    # When the master runs the job
    started = time.monotonic()
    result = invoke_master(s3_event_for(f"uploads/{job_id}/target", sizes["target"]))
    took = time.monotonic() - started
    # Then it returned with the job done, the receiver never called
    assert result == {"jobs": {job_id: "succeeded"}}
    assert receiver.requests == []
    assert took < 30, took
    # And the event waits on the queue for the sender
    assert events.relay() == 1
    queued = emulated_sqs(stack).get_queue_attributes(
        QueueUrl=stack.queues.events.url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert queued["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_a_receiver_that_fails_first_gets_the_event_after_the_scheduled_delay(
    api: ApiClient, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    # Given a receiver that answers 503 once, then 204, and the schedule scaled so the
    # first retry (5 s) comes after 1 s
    _configure(stack, receiver.url, ports={receiver.port}, retry_scale=0.2)
    events = _events(stack)
    receiver.answers = [503]
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    assert events.relay() == 1
    # When the sender tries
    assert events.send() == 1
    # Then the first attempt failed and the event is not back before its delay
    assert len(receiver.requests) == 1
    assert events.send() == 0
    # And after it, the event arrives with the same webhook-id, both signed
    time.sleep(1.2)
    assert events.send() == 1
    assert receiver.ids() == [f"msg_{job_id}_expired"] * 2
    assert receiver.arrived[1] - receiver.arrived[0] >= 1.0
    assert receiver.payload(0)["data"] == receiver.payload(1)["data"]
    job = stack.store().get(job_id)
    assert job is not None
    assert job.webhook == {"state": "delivered", "status_code": 204, "attempts": 2}
    # And nothing more is left to send
    time.sleep(1.1)
    assert events.send() == 0


def test_a_receiver_down_for_every_attempt_parks_the_event_and_a_redrive_delivers_it(
    api: ApiClient, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    # Given a receiver that fails every attempt, and no wait between attempts
    _configure(stack, receiver.url, ports={receiver.port}, retry_scale=0)
    events = _events(stack)
    receiver.answers = [503] * 8
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    assert events.relay() == 1
    # When the sender has made all its attempts
    for _ in range(8):
        assert events.send() == 1
    # Then there were 8, and the next receive moves the event to the dead-letter queue
    assert len(receiver.requests) == 8
    assert events.send() == 0
    (parked,) = events.dead_letters()
    assert f"msg_{job_id}_expired" in parked
    # When an operator redrives it once the receiver works again (what
    # `aws sqs start-message-move-task` does; moto does not have it)
    sqs = emulated_sqs(stack)
    dead = sqs.receive_message(QueueUrl=stack.queues.dead_letters.url, VisibilityTimeout=0)
    for message in dead.get("Messages", []):
        sqs.send_message(QueueUrl=stack.queues.events.url, MessageBody=message["Body"])
        sqs.delete_message(
            QueueUrl=stack.queues.dead_letters.url, ReceiptHandle=message["ReceiptHandle"]
        )
    assert events.send() == 1
    # Then it is delivered, under the same webhook-id as every attempt before
    assert receiver.ids() == [f"msg_{job_id}_expired"] * 9
    assert receiver.payload()["type"] == "job.expired"
    assert events.dead_letters() == []


def test_a_receiver_that_refuses_the_event_is_not_asked_again(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events, tmp_path: Path
) -> None:
    # Given a receiver that answers 410 Gone
    receiver.answers = [410]
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    assert events.relay() == 1
    # When the sender tries
    assert events.send() == 1
    # Then the event is done: no second attempt, nothing parked, the refusal noted
    time.sleep(1.1)
    assert events.send() == 0
    assert len(receiver.requests) == 1
    assert events.dead_letters() == []
    job = stack.store().get(job_id)
    assert job is not None
    assert job.webhook is not None
    assert (job.webhook["state"], job.webhook["status_code"]) == ("rejected", 410)


def test_a_stream_record_delivered_twice_gives_one_webhook_id(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events, tmp_path: Path
) -> None:
    from mastering import clients
    from mastering.devstack.resources import jobs_stream_arn

    # Given a job that ended, and its stream record as Lambda hands it over
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    streams = clients.dynamodb_streams_client(stack.settings.aws)
    arn = jobs_stream_arn(stack.settings)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    (ended,) = [
        r
        for r in streams.get_records(ShardIterator=iterator)["Records"]
        if r["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "expired"
    ]
    ended["dynamodb"]["ApproximateCreationDateTime"] = 0
    ended["eventSourceARN"] = arn
    # When the job-events function gets it twice (Lambda is at-least-once)
    relay = _invoker("job_events", 60)
    for _ in range(2):
        assert relay({"Records": [ended]}) == {"batchItemFailures": []}
    # Then the receiver gets it twice under one webhook-id, to drop the repeat by
    while events.send():
        pass
    assert receiver.ids() == [f"msg_{job_id}_expired"] * 2


def test_a_refused_destination_is_never_called_and_never_fails_the_job(
    api: ApiClient, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    # Given a deployment misconfigured with a private webhook address
    _configure(stack, "https://10.20.30.40/hook", ports={443})
    events = _events(stack)
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    # When the event is sent
    assert events.relay() == 1
    assert events.send() == 1
    # Then nothing was called, the event is done (not retried, not parked) and the
    # refusal is noted on the job, which stays as it ended
    time.sleep(1.1)
    assert events.send() == 0
    assert events.dead_letters() == []
    job = stack.store().get(job_id)
    assert job is not None
    assert str(job.status) == "expired"
    assert job.webhook is not None
    assert job.webhook["state"] == "refused"


def test_receivers_reject_tampering_stale_timestamps_and_wrong_secrets(
    api: ApiClient, stack: Stack, receiver: Receiver, events: Events, tmp_path: Path
) -> None:
    # Given a real webhook captured from a job
    job_id, _ = _waiting_job(api, tmp_path)
    _expire(stack, job_id)
    events.relay()
    events.send()
    headers, body = receiver.requests[0]
    verifier = Webhook(SECRET)
    verifier.verify(body, headers)
    # Then a tampered body fails verification
    tampered = body.replace(b'"expired"', b'"failed"', 1)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, headers)
    # And a message re-signed with a timestamp ten minutes old fails the window
    old = datetime.now(UTC) - timedelta(minutes=10)
    stale = {
        **headers,
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": verifier.sign(headers["webhook-id"], old, body.decode()),
    }
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, stale)
    # And another secret does not verify it
    other = "whsec_" + base64.b64encode(b"some-other-secret-of-32-bytes!!!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def _expire(stack: Stack, job_id: str) -> None:
    from mastering.jobs.rules import expire_job

    assert expire_job(job_id, store=stack.store(), now=NOW) is not None
