"""`mastering serve` delivering a real job's webhook to a receiver that fails first.

The stack is a black box here, as in ``test_serve_flow.py``: a job is created and
uploaded over HTTP, mastered by the stack's worker, and its ending reaches a receiver
on 127.0.0.1 through the stack's own stream poller, job-events function, webhook
queue and sender. The receiver answers the first delivery with 503; the retry
schedule is scaled (``--webhook-retry-scale 0.2``: the first retry after 1 s, not 5 s).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from tests.audio_factory import decaying_notes_wav
from tests.http_receiver import receiving_posts
from tests.local.serve_process import API_KEY, running_serve, start_wav_job

RATE = 44_100
# Guards against a hung stack, not performance checks.
DEADLINE_S = 180.0


class Receiver:
    def __init__(self) -> None:
        self.answers = [503]
        # (headers, body, wall-clock arrival)
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.url = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    def answer(headers: dict[str, str], body: bytes) -> int:
        state.requests.append((headers, body, time.time()))
        return state.answers.pop(0) if state.answers else 204

    with receiving_posts(answer) as port:
        state.url = f"http://127.0.0.1:{port}/ai-mastering-webhook"
        yield state


@pytest.mark.slow
def test_a_receiver_that_fails_the_first_delivery_gets_the_event_on_retry(
    tmp_path: Path, receiver: Receiver
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # Given a stack whose webhook receiver answers its first delivery with 503
    with running_serve(
        tmp_path,
        "--webhook-url",
        receiver.url,
        "--webhook-secret",
        secret,
        "--webhook-retry-scale",
        "0.2",
    ) as serve:
        session = requests.Session()
        session.headers.update({"X-Api-Key": API_KEY, "X-Owner-Id": "user-1"})
        # When a real job is created, uploaded and mastered
        audio = decaying_notes_wav(4.0, RATE)
        job_id = start_wav_job(serve, session, audio)
        deadline = time.monotonic() + DEADLINE_S
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        job = session.get(f"{serve.api}/jobs/{job_id}", timeout=30).json()
        log = serve.output()

    # Then the receiver got it twice: the refused first delivery, then the retry
    assert len(receiver.requests) == 2, log[-4000:]
    assert job["status"] == "succeeded", job
    ids = [headers["webhook-id"] for headers, _, _ in receiver.requests]
    assert ids == [f"msg_{job_id}_succeeded"] * 2
    # And both are signed job.succeeded events with the job's results
    for headers, body, _ in receiver.requests:
        payload = Webhook(secret).verify(body, headers)
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["results"]["wav16"]["url"].startswith("http://127.0.0.1")
    # And the retry came after the scaled first delay (5 s x 0.2), not at once
    first, second = (arrived for _, _, arrived in receiver.requests)
    assert second - first >= 1.0
    assert "next attempt in 1 s" in log
    assert "webhook delivered" in log
    ended = datetime.fromisoformat(job["updated_at"].replace("Z", "+00:00")).astimezone(UTC)
    print(
        f"terminal write -> first delivery {first - ended.timestamp():.2f} s, "
        f"-> retry delivered {second - ended.timestamp():.2f} s"
    )
