"""Faults on the local stack (`mastering serve` as a user runs it, two workers): a worker
SIGKILLed mid-job, the emulator (S3, DynamoDB, SQS) paused, twenty copies of an upload's
S3 event at once, a webhook receiver down then up, and a cancel racing the end of a job.

Each asserts what a client relies on: the job reaches a terminal state with a clear
code, it was processed at most once (one ``job claimed`` line per processing run in
the stack's log), the workers' /tmp holds nothing of it afterwards, and its webhook
reached the receiver once per event id (retries repeat the id; a receiver dedupes).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from standardwebhooks import Webhook

from tests.audio_factory import decaying_notes_wav
from tests.http_receiver import receiving_posts
from tests.local.serve_process import API_KEY, Serve, running_serve, start_wav_job

RATE = 44_100
# Bounds on waits, not performance checks.
JOB_DEADLINE_S = 120.0
# DESIGN: a worker killed mid-job ends failed, with a webhook, within a minute.
KILLED_JOB_DEADLINE_S = 60.0
TERMINAL = frozenset({"succeeded", "failed", "expired", "cancelled"})
STACK_NAME = "spectrum-mastering-local"


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that refuses the next ``refuse`` deliveries."""

    secret: str
    url: str = ""
    refuse: int = 0
    # (webhook-id, event type, status answered)
    deliveries: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self, job_id: str) -> list[tuple[str, str, int]]:
        with self.lock:
            return [d for d in self.deliveries if d[0].startswith(f"msg_{job_id}_")]

    def accepted(self, job_id: str) -> Counter[str]:
        """Event id -> how many deliveries of it were answered 2xx."""
        return Counter(d[0] for d in self.delivered(job_id) if 200 <= d[2] < 300)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())

    def answer(headers: dict[str, str], body: bytes) -> int:
        event = Webhook(state.secret).verify(body, headers)
        with state.lock:
            status = 503 if state.refuse > 0 else 204
            state.refuse = max(0, state.refuse - 1)
            state.deliveries.append((headers["webhook-id"], event["type"], status))
        return status

    with receiving_posts(answer) as port:
        state.url = f"http://127.0.0.1:{port}/ai-mastering-webhook"
        yield state


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Serve]:
    folder = tmp_path_factory.mktemp("faults")
    with running_serve(
        folder,
        "--workers",
        "2",
        "--webhook-url",
        receiver.url,
        "--webhook-secret",
        receiver.secret,
        # Retries after 1 s, 1 s, 4 s, 14 s... instead of 5 s, 5 min, 30 min, 2 h.
        "--webhook-retry-scale",
        "0.002",
    ) as running:
        yield running


@pytest.fixture
def client() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update({"X-Api-Key": API_KEY, "X-Owner-Id": "faults"})
        yield session


def _start_job(
    serve: Serve, client: requests.Session, seconds: float, **body: Any
) -> tuple[str, int]:
    audio = decaying_notes_wav(seconds, RATE, noise=0.02)
    return start_wav_job(serve, client, audio, **body), len(audio)


def _job(serve: Serve, client: requests.Session, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(f"{serve.api}/jobs/{job_id}", timeout=60).json()
    return answer


def _wait_until(
    serve: Serve,
    client: requests.Session,
    job_id: str,
    done: Any,
    deadline_s: float = JOB_DEADLINE_S,
) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        job = _job(serve, client, job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job never got there: {job}\n{serve.output()[-3000:]}")
        time.sleep(0.1)


def _ended(serve: Serve, client: requests.Session, job_id: str, **wait: Any) -> dict[str, Any]:
    return _wait_until(serve, client, job_id, lambda job: job["status"] in TERMINAL, **wait)


def _wait_for_webhook(receiver: Receiver, job_id: str, status: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while receiver.accepted(job_id)[f"msg_{job_id}_{status}"] < 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {status} webhook for {job_id}: {receiver.delivered(job_id)}")
        time.sleep(0.1)


def _runs(serve: Serve, job_id: str) -> int:
    """Processing runs of the job: the master function logs "job claimed: <id>" once
    per run."""
    return serve.output().count(f"job claimed: {job_id}")


def _leftovers(serve: Serve) -> list[str]:
    """Job work directories in any worker's /tmp (the stack's --work-dir)."""
    work = Path(serve.log).parent / "work"
    return sorted(str(p.relative_to(work)) for p in work.glob("worker-*/mastering-job-*"))


def _worker_pids(serve: Serve) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == serve.process.pid and b"mastering.devstack.s3_worker" in command:
            pids.append(int(entry.name))
    return pids


def _assert_one_terminal_event(receiver: Receiver, job_id: str, status: str) -> None:
    accepted = receiver.accepted(job_id)
    assert accepted == Counter({f"msg_{job_id}_{status}": 1}), receiver.delivered(job_id)


# ---------------------------------------------------------------- the faults


def test_a_worker_killed_mid_job_ends_failed_with_a_webhook_within_a_minute(
    serve: Serve, client: requests.Session, receiver: Receiver
) -> None:
    # Given a long job the engine is working on
    job_id, _ = _start_job(serve, client, 90.0)
    _wait_until(serve, client, job_id, lambda job: job["progress"]["percent"] >= 30)
    # When every worker is SIGKILLed (as Lambda kills a sandbox out of memory)
    killed_at = time.monotonic()
    for pid in _worker_pids(serve):
        os.kill(pid, signal.SIGKILL)
    # Then within a minute the job is failed with a code, and its webhook arrived
    job = _ended(serve, client, job_id, deadline_s=KILLED_JOB_DEADLINE_S)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "internal_error"
    assert "stopped unexpectedly" in job["error"]["message"] or "memory" in job["error"]["message"]
    _wait_for_webhook(receiver, job_id, "failed", KILLED_JOB_DEADLINE_S)
    assert time.monotonic() - killed_at < KILLED_JOB_DEADLINE_S
    # And it ran once, was not retried, and left nothing in the workers' /tmp once the
    # stack replaced the dead sandboxes
    time.sleep(3)
    assert _runs(serve, job_id) == 1
    assert _leftovers(serve) == []
    _assert_one_terminal_event(receiver, job_id, "failed")
    # And the replaced workers master the next job
    after, _ = _start_job(serve, client, 3.0)
    assert _ended(serve, client, after)["status"] == "succeeded"


def test_a_paused_emulator_delays_a_job_but_loses_nothing(
    serve: Serve, client: requests.Session, receiver: Receiver
) -> None:
    # Given a job under way
    job_id, _ = _start_job(serve, client, 30.0)
    _wait_until(serve, client, job_id, lambda job: job["status"] == "processing")
    # When the process holding S3, DynamoDB and SQS (and the API) stops for 5 s
    os.kill(serve.process.pid, signal.SIGSTOP)
    try:
        time.sleep(5)
    finally:
        os.kill(serve.process.pid, signal.SIGCONT)
    # Then the job still ends, once, with its webhook, and leaves nothing behind
    job = _ended(serve, client, job_id)
    assert job["status"] == "succeeded", job
    _wait_for_webhook(receiver, job_id, "succeeded", JOB_DEADLINE_S)
    assert _runs(serve, job_id) == 1
    assert _leftovers(serve) == []
    _assert_one_terminal_event(receiver, job_id, "succeeded")


def _emulator(serve: Serve) -> str:
    found = re.search(r"S3 and co\.\s+(http://\S+)", serve.output())
    assert found, serve.output()[:2000]
    return found.group(1)


def test_twenty_copies_of_an_upload_event_at_once_run_the_job_once(
    serve: Serve, client: requests.Session, receiver: Receiver
) -> None:
    # Given an uploaded job, and the queue its S3 events go to
    job_id, size = _start_job(serve, client, 5.0)
    sqs = boto3.client(
        "sqs",
        endpoint_url=_emulator(serve),
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    queue = sqs.get_queue_url(QueueName=f"{STACK_NAME}-upload-events")["QueueUrl"]
    event = json.loads((Path(__file__).parents[2] / "events/s3-put-target.json").read_text())
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = f"{STACK_NAME}-uploads"
    record["s3"]["object"]["key"] = f"uploads/{job_id}/target"
    record["s3"]["object"]["size"] = size
    # When S3 delivers its event twenty more times, all at once
    threads = [
        threading.Thread(
            target=sqs.send_message, kwargs={"QueueUrl": queue, "MessageBody": json.dumps(event)}
        )
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the job is mastered exactly once and ends with one webhook
    job = _ended(serve, client, job_id)
    assert job["status"] == "succeeded", job
    _wait_for_webhook(receiver, job_id, "succeeded", JOB_DEADLINE_S)
    # (the twenty copies are consumed: nothing left to start another run)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if not any(int(value) for value in attributes.values()):
            break
        time.sleep(0.2)
    assert _runs(serve, job_id) == 1
    assert _leftovers(serve) == []
    _assert_one_terminal_event(receiver, job_id, "succeeded")


def test_a_receiver_down_then_up_gets_every_event_once(
    serve: Serve, client: requests.Session, receiver: Receiver
) -> None:
    # Given a receiver that refuses the next three deliveries (503), then is back
    with receiver.lock:
        receiver.refuse = 3
    # When a job ends
    job_id, _ = _start_job(serve, client, 3.0)
    assert _ended(serve, client, job_id)["status"] == "succeeded"
    # Then the event arrives on the fourth attempt, with the same id every time, and
    # is accepted once
    _wait_for_webhook(receiver, job_id, "succeeded", JOB_DEADLINE_S)
    attempts = receiver.delivered(job_id)
    assert [status for _, _, status in attempts] == [503, 503, 503, 204]
    assert {event_id for event_id, _, _ in attempts} == {f"msg_{job_id}_succeeded"}
    _assert_one_terminal_event(receiver, job_id, "succeeded")


def test_a_cancel_stops_a_processing_job_within_seconds_and_publishes_nothing(
    serve: Serve, client: requests.Session, receiver: Receiver
) -> None:
    # Given a long job in the engine
    job_id, _ = _start_job(serve, client, 120.0)
    _wait_until(serve, client, job_id, lambda job: job["progress"]["percent"] >= 30)
    # When its owner cancels it
    answer = client.post(f"{serve.api}/jobs/{job_id}/cancel", timeout=30)
    cancelled_at = time.monotonic()
    # Then it is cancelled at once, the worker stops within seconds, and nothing is
    # published: no results, one job.cancelled event
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    while f"job stopped, no longer ours: {job_id}" not in serve.output():
        assert time.monotonic() - cancelled_at < 10, serve.output()[-3000:]
        time.sleep(0.1)
    job = _job(serve, client, job_id)
    assert job["status"] == "cancelled"
    assert job["results"] == {}
    _wait_for_webhook(receiver, job_id, "cancelled", JOB_DEADLINE_S)
    time.sleep(1)
    assert _runs(serve, job_id) == 1
    assert _leftovers(serve) == []
    _assert_one_terminal_event(receiver, job_id, "cancelled")


@pytest.mark.parametrize("at_percent", [80, 90])
def test_a_cancel_racing_the_end_of_a_job_leaves_one_consistent_outcome(
    serve: Serve, client: requests.Session, receiver: Receiver, at_percent: int
) -> None:
    # Given a job about to finish (encoding or uploading its results)
    job_id, _ = _start_job(serve, client, 20.0, outputs=["wav16", "flac", "mp3"])
    _wait_until(
        serve,
        client,
        job_id,
        lambda job: job["progress"]["percent"] >= at_percent or job["status"] in TERMINAL,
    )
    # When its owner cancels it
    answer = client.post(f"{serve.api}/jobs/{job_id}/cancel", timeout=30)
    job = _ended(serve, client, job_id)
    # Then either the cancel won (cancelled, no results) or the job had finished
    # (409 job_finished, succeeded with its results): never a mix
    if answer.status_code == 200:
        assert job["status"] == "cancelled"
        assert job["results"] == {}
        status = "cancelled"
    else:
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "job_finished"
        assert job["status"] == "succeeded"
        assert set(job["results"]) == {"wav16", "flac", "mp3"}
        status = "succeeded"
    _wait_for_webhook(receiver, job_id, status, JOB_DEADLINE_S)
    time.sleep(1)
    assert _runs(serve, job_id) == 1
    assert _leftovers(serve) == []
    _assert_one_terminal_event(receiver, job_id, status)
