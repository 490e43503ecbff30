"""Job-ended events with in-memory ports: which job changes are events, one delivery
attempt and how it is judged, and when the next attempt is due."""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from mastering.config import Settings, WebhookSettings
from mastering.jobs.store import job_from_image
from mastering.notify.delivery import RetryLater, SenderPorts, deliver
from mastering.notify.events import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE_S,
    JobEnded,
    NotAnEvent,
    retry_delay_s,
)
from mastering.notify.relay import RelayPorts, job_ended_event, relay
from mastering.notify.webhooks import Delivery, WebhookSender, WebhookTarget
from tests.conftest import load_event
from tests.fakes import FakeStorage, InMemoryJobStore, RecordingQueue

SECRET = "whsec_" + base64.b64encode(b"spectrum-test-webhook-secret-32b").decode()
NOW = datetime(2026, 11, 23, 10, 2, tzinfo=UTC)
URL = "https://hooks.example.com/in"


def _stream_record() -> dict[str, Any]:
    """events/: the stream record of a job moving from processing to succeeded."""
    record: dict[str, Any] = copy.deepcopy(load_event("job-events-succeeded.json")["Records"][0])
    return record


def _with_statuses(old: str | None, new: str | None, event_name: str = "MODIFY") -> dict[str, Any]:
    record = _stream_record()
    record["eventName"] = event_name
    change = record["dynamodb"]
    for image, status in (("OldImage", old), ("NewImage", new)):
        if status is None:
            change.pop(image)
        else:
            change[image]["status"] = {"S": status}
    return record


@pytest.fixture
def settings() -> Settings:
    return Settings(
        jobs_table="jobs",
        uploads_bucket="uploads",
        results_bucket="results",
        webhook=WebhookSettings(url=URL, secret=SECRET),
        webhook_queue_url="https://sqs.test/webhooks",
    )


# ---------------------------------------------------------------- the schedule


def test_the_retry_schedule_is_standard_webhooks() -> None:
    # Given attempts 1 to 7 failing
    delays = [retry_delay_s(attempt) for attempt in range(1, MAX_ATTEMPTS)]
    # Then each next one is due 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h later
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]
    # And after the 8th there is none
    assert MAX_ATTEMPTS == 8
    assert retry_delay_s(8) is None
    # And no delay exceeds what SQS can hide a message for (12 h)
    assert max(RETRY_SCHEDULE_S) <= 12 * 3600


def test_a_scaled_schedule_keeps_whole_seconds() -> None:
    # SQS visibility is whole seconds: the shortest scaled delay is 1 s, and 0 is 0.
    assert [retry_delay_s(a, scale=0.01) for a in range(1, 8)] == [1, 3, 18, 72, 180, 360, 360]
    assert [retry_delay_s(a, scale=0) for a in range(1, 8)] == [0] * 7
    assert retry_delay_s(8, scale=0.01) is None


# ---------------------------------------------------------------- the stream


def test_a_job_that_moved_into_a_terminal_status_is_an_event() -> None:
    # Given the stream record of events/ (processing -> succeeded)
    event = job_ended_event(_stream_record())
    # Then it is the job's job.succeeded event, carrying the job as it ended
    assert event is not None
    assert event.event_type == "job.succeeded"
    assert event.event_id == "msg_3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b_succeeded"
    assert event.image is not None
    assert job_from_image(event.image).results


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("processing", "processing", "MODIFY"),  # progress
        ("succeeded", "succeeded", "MODIFY"),  # the sender's note on an ended job
        (None, "awaiting_upload", "INSERT"),  # creation
        ("failed", None, "REMOVE"),  # DELETE /jobs/{id}, or TTL
        ("awaiting_upload", "queued", "MODIFY"),
        ("processing", "no-such-status", "MODIFY"),
    ],
)
def test_other_changes_are_not_events(old: str | None, new: str | None, name: str) -> None:
    assert job_ended_event(_with_statuses(old, new, name)) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("awaiting_upload", "expired"),
        ("queued", "cancelled"),
        ("awaiting_upload", "failed"),
        ("processing", "failed"),
    ],
)
def test_every_ending_is_an_event_of_its_own_type(old: str, new: str) -> None:
    event = job_ended_event(_with_statuses(old, new))
    assert event is not None
    assert event.event_type == f"job.{new}"


def test_relay_queues_the_event_and_deletes_the_uploads(settings: Settings) -> None:
    # Given a job whose target and reference are in the uploads bucket
    storage, queue = FakeStorage(), RecordingQueue()
    job_id = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"
    for role in ("target", "reference"):
        storage.objects[("uploads", f"uploads/{job_id}/{role}")] = b"RIFF"
    storage.objects[("results", f"results/{job_id}/mastered.wav")] = b"RIFF"
    # When the stream says it succeeded
    event = relay(_stream_record(), ports=RelayPorts(settings, queue, storage))
    # Then one event is queued, and its uploads (only those) are gone
    assert event is not None
    assert queue.sent == [event]
    assert set(storage.objects) == {("results", f"results/{job_id}/mastered.wav")}


def test_an_event_that_cannot_be_queued_fails_the_record_and_keeps_the_uploads(
    settings: Settings,
) -> None:
    storage, queue = FakeStorage(), RecordingQueue(fail_sends=True)
    storage.objects[("uploads", "uploads/3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b/target")] = b"x"
    # When SQS is unreachable, the record fails (Lambda retries it) and nothing is lost
    with pytest.raises(ConnectionError):
        relay(_stream_record(), ports=RelayPorts(settings, queue, storage))
    assert storage.objects


def test_a_job_too_big_for_a_message_travels_without_its_image(settings: Settings) -> None:
    record = _stream_record()
    record["dynamodb"]["NewImage"]["metadata"] = {"M": {"notes": {"S": "x" * 300_000}}}
    queue = RecordingQueue()
    relay(record, ports=RelayPorts(settings, queue, FakeStorage()))
    (event,) = queue.sent
    assert event.image is None
    assert len(event.to_message()) < 1000


def test_a_message_round_trips_and_garbage_is_not_an_event() -> None:
    event = job_ended_event(_stream_record())
    assert event is not None
    assert JobEnded.from_message(event.to_message()) == event
    for body in ("not json", "{}", '{"job_id": "x", "status": "processing"}', "[1]"):
        with pytest.raises(NotAnEvent):
            JobEnded.from_message(body)


# ---------------------------------------------------------------- one attempt


def _sender(answers: list[int | Exception], posted: list[dict[str, str]]) -> Any:
    def post(destination: Any, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        posted.append({**headers, "body": body.decode()})
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sender_for(target: WebhookTarget) -> WebhookSender:
        return WebhookSender(target, post=post, resolver=lambda host, port: ["93.184.216.34"])

    return sender_for


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (200, Delivery.DELIVERED),
        (204, Delivery.DELIVERED),
        (202, Delivery.DELIVERED),
        (500, Delivery.RETRY),
        (503, Delivery.RETRY),
        (429, Delivery.RETRY),
        (408, Delivery.RETRY),
        (425, Delivery.RETRY),
        (302, Delivery.RETRY),
        (ConnectionResetError("down"), Delivery.RETRY),
        (TimeoutError("slow"), Delivery.RETRY),
        (400, Delivery.REJECTED),
        (404, Delivery.REJECTED),
        (409, Delivery.REJECTED),
        (410, Delivery.REJECTED),
        (413, Delivery.REJECTED),
    ],
)
def test_one_attempt_is_judged_by_the_answer(answer: int | Exception, state: Delivery) -> None:
    posted: list[dict[str, str]] = []
    sender = _sender([answer], posted)(WebhookTarget(URL, SECRET))
    outcome = sender.send("job.failed", {"job_id": "x"}, message_id="msg_x_failed")
    assert outcome.state is state
    assert len(posted) == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A receiver that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_receiver_that_hangs_costs_one_timeout_not_more(silent_server: int) -> None:
    # Given a receiver that takes the connection and never answers
    target = WebhookTarget(
        f"http://127.0.0.1:{silent_server}/hook",
        SECRET,
        allow_loopback=True,
        allowed_ports=frozenset({silent_server}),
    )
    # When one attempt is made with a 0.5 s timeout
    started = time.monotonic()
    outcome = WebhookSender(target, timeout_s=0.5).send("job.failed", {}, message_id="msg_h")
    # Then it gives up after that timeout and asks for a retry
    assert time.monotonic() - started < 2.0
    assert outcome.state is Delivery.RETRY


# ---------------------------------------------------------------- the sender's domain


@pytest.fixture
def world(settings: Settings) -> dict[str, Any]:
    store, queue = InMemoryJobStore(), RecordingQueue()
    posted: list[dict[str, str]] = []
    answers: list[int | Exception] = []
    ports = SenderPorts(
        settings=settings,
        store=store,
        links=FakeStorage(),
        queue=queue,
        target=lambda: WebhookTarget(URL, SECRET),
        sender_for=_sender(answers, posted),
        clock=lambda: NOW,
    )
    event = job_ended_event(_stream_record())
    assert event is not None
    return {
        "ports": ports,
        "store": store,
        "queue": queue,
        "posted": posted,
        "answers": answers,
        "event": event,
    }


def test_the_body_is_made_at_send_time_from_the_job_as_it_is(world: dict[str, Any]) -> None:
    # Given the job still in the table
    event: JobEnded = world["event"]
    assert event.image is not None
    world["store"].create(job_from_image(event.image))
    world["answers"].append(204)
    # When the event is delivered
    outcome = deliver(event, receipt_handle="r1", attempt=1, ports=world["ports"])
    # Then the receiver got the signed job body with result links made now
    assert outcome is not None
    assert outcome.state is Delivery.DELIVERED
    (headers,) = world["posted"]
    payload = Webhook(SECRET).verify(headers["body"], headers)
    assert payload["type"] == "job.succeeded"
    assert headers["webhook-id"] == event.event_id
    assert payload["data"]["results"]["wav16"]["url"].startswith("https://results.s3.test/")
    assert payload["data"]["results"]["wav16"]["expires_at"] == "2026-11-23T11:02:00.000Z"
    # And how it went is noted on the job
    assert world["store"].get(event.job_id).webhook == {
        "state": "delivered",
        "status_code": 204,
        "attempts": 1,
    }


def test_a_job_deleted_meanwhile_is_told_from_the_event(world: dict[str, Any]) -> None:
    # Given no job in the table any more
    world["answers"].append(200)
    # When its event is delivered
    deliver(world["event"], receipt_handle="r1", attempt=1, ports=world["ports"])
    # Then the body is the job as it ended
    (headers,) = world["posted"]
    data = json.loads(headers["body"])["data"]
    assert (data["status"], data["metadata"]) == ("succeeded", {"track_id": "trk_42"})


@pytest.mark.parametrize(("attempt", "delay"), [(1, 5), (2, 300), (4, 7200), (7, 36000)])
def test_a_failed_attempt_waits_for_the_next_one_of_the_schedule(
    world: dict[str, Any], attempt: int, delay: int
) -> None:
    world["answers"].append(503)
    with pytest.raises(RetryLater):
        deliver(world["event"], receipt_handle="r7", attempt=attempt, ports=world["ports"])
    assert world["queue"].retries == [("r7", delay)]


def test_after_the_last_attempt_the_message_goes_at_once(world: dict[str, Any]) -> None:
    # Given the 8th attempt failing
    world["answers"].append(ConnectionRefusedError("down"))
    # Then the message stays failed and visible, for the redrive policy to park it
    with pytest.raises(RetryLater):
        deliver(world["event"], receipt_handle="r8", attempt=8, ports=world["ports"])
    assert world["queue"].retries == [("r8", 0)]


def test_the_schedule_scale_applies(world: dict[str, Any], settings: Settings) -> None:
    assert settings.webhook is not None
    scaled = replace(settings, webhook=replace(settings.webhook, retry_scale=0.01))
    world["answers"].append(503)
    with pytest.raises(RetryLater):
        deliver(
            world["event"],
            receipt_handle="r",
            attempt=3,
            ports=replace(world["ports"], settings=scaled),
        )
    assert world["queue"].retries == [("r", 18)]


def test_a_refusing_receiver_is_final(world: dict[str, Any]) -> None:
    world["answers"].append(410)
    outcome = deliver(world["event"], receipt_handle="r", attempt=1, ports=world["ports"])
    assert outcome is not None
    assert (outcome.state, outcome.status_code) == (Delivery.REJECTED, 410)
    assert world["queue"].retries == []


def test_a_refused_destination_is_final_and_never_called(world: dict[str, Any]) -> None:
    ports = replace(world["ports"], target=lambda: WebhookTarget("https://10.1.2.3/in", SECRET))

    def sender_for(target: WebhookTarget) -> WebhookSender:
        return WebhookSender(target, resolver=lambda host, port: ["10.1.2.3"])

    outcome = deliver(
        world["event"], receipt_handle="r", attempt=1, ports=replace(ports, sender_for=sender_for)
    )
    assert outcome is not None
    assert outcome.state is Delivery.REFUSED
    assert world["queue"].retries == []


def test_webhooks_off_drops_the_event(world: dict[str, Any]) -> None:
    ports = replace(world["ports"], target=lambda: None)
    assert deliver(world["event"], receipt_handle="r", attempt=1, ports=ports) is None
    assert world["posted"] == []
    assert world["queue"].retries == []


def test_an_unreadable_secret_is_retried_not_dropped(world: dict[str, Any]) -> None:
    def target() -> WebhookTarget:
        raise RuntimeError("ParameterNotFound")

    with pytest.raises(RetryLater):
        deliver(
            world["event"],
            receipt_handle="r",
            attempt=1,
            ports=replace(world["ports"], target=target),
        )
    assert world["queue"].retries == [("r", 5)]
    assert world["posted"] == []
