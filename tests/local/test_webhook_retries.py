"""`mastering serve` delivering a real job's webhook to a receiver that fails first.

The stack is a black box here, as in ``test_serve_flow.py``: a job is created and
uploaded over HTTP, mastered by the stack's worker, and its ending reaches a receiver
on 127.0.0.1 through the stack's own stream poller, job-events function, webhook
queue and sender. The receiver answers the first delivery with 503; the retry
schedule is scaled (``--webhook-retry-scale 0.2``: the first retry after 1 s, not 5 s).
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from standardwebhooks import Webhook

from tests.local.serve_process import API_KEY, running_serve

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

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append((headers, body, time.time()))
            self.send_response(state.answers.pop(0) if state.answers else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/ai-mastering-webhook"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def _song(seconds: float = 4.0) -> bytes:
    """A 16-bit stereo WAV of a few decaying notes."""
    t = np.arange(int(seconds * RATE)) / RATE
    voice = np.exp(-3.0 * np.mod(t, 0.5)) * sum(np.sin(2 * np.pi * f * t) for f in (110, 220, 330))
    samples = np.stack([voice, 0.9 * voice], axis=1)
    samples *= 0.3 / np.max(np.abs(samples))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sink:
        sink.setnchannels(2)
        sink.setsampwidth(2)
        sink.setframerate(RATE)
        sink.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


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
        audio = _song()
        created = session.post(
            f"{serve.api}/jobs",
            json={
                "target": {"filename": "song.wav", "size": len(audio), "content_type": "audio/wav"},
                "preset": "balanced",
            },
            timeout=30,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        upload = created.json()["uploads"]["target"]
        posted = requests.post(
            upload["url"],
            data=upload["fields"],
            files={"file": ("song.wav", audio, "audio/wav")},
            timeout=30,
        )
        assert posted.status_code in (200, 201, 204), posted.text
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
