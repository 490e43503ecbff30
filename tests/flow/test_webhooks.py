"""Signed webhooks when a job ends: delivery, signature, retries and refusals."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from mastering.notify.webhooks import (
    WebhookRefused,
    WebhookSender,
    WebhookTarget,
    resolve_destination,
)
from tests.audio_factory import tone_mix, write_wav
from tests.conftest import ApiClient, FakeLambdaContext, Stack, load_event, load_handler
from tests.jobflow import create_and_upload, deliver

SECRET = "whsec_" + base64.b64encode(b"spectrum-test-webhook-secret-32b").decode()
RATE = 44_100


@dataclass
class Receiver:
    """A local webhook endpoint that records requests and answers from a script."""

    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.answers.pop(0) if state.answers else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/mastering"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def webhook_env(receiver: Receiver, stack: Stack) -> Receiver:
    from mastering.config import WebhookSettings

    stack.configure(webhook=WebhookSettings(url=receiver.url, secret=SECRET, allow_loopback=True))
    return receiver


def _stored_webhook(stack: Stack, job_id: str) -> dict[str, Any] | None:
    job = stack.store().get(job_id)
    assert job is not None
    return job.webhook


def _files(tmp_path: Path) -> tuple[Path, Path]:
    target = write_wav(tmp_path / "t.wav", tone_mix(6.0, RATE, seed=21, peak_dbfs=-15), RATE)
    reference = write_wav(tmp_path / "r.wav", tone_mix(6.0, RATE, seed=22, peak_dbfs=-1), RATE)
    return target, reference


@pytest.mark.slow
def test_succeeded_job_sends_a_signed_webhook_with_the_job_body(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    webhook_env: Receiver,
    tmp_path: Path,
) -> None:
    # Given a deployment with a webhook, and a job whose files are uploaded
    target, reference = _files(tmp_path)
    job_id, sizes = create_and_upload(api, target, reference)
    # When the job runs
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    # Then one webhook arrived, and standardwebhooks verifies it with the secret
    assert len(webhook_env.requests) == 1
    headers, body = webhook_env.requests[0]
    payload = Webhook(SECRET).verify(body, headers)
    assert headers["webhook-signature"].startswith("v1,")
    assert payload["type"] == "job.succeeded"
    # And its data is the GET /jobs body, result URLs included
    data = payload["data"]
    current = api.call("GET", f"/jobs/{job_id}").body
    assert data["job_id"] == job_id
    assert data["status"] == "succeeded"
    assert data["metrics"] == current["metrics"]
    assert set(data["results"]) == {"wav16"}
    assert data["results"]["wav16"]["url"].startswith("http")
    # And the delivery is recorded on the job
    assert _stored_webhook(stack, job_id) == {
        "state": "delivered",
        "attempts": 1,
        "status_code": 204,
    }


@pytest.mark.slow
def test_receiver_rejects_tampering_stale_timestamps_and_wrong_secrets(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    webhook_env: Receiver,
    tmp_path: Path,
) -> None:
    # Given a real webhook captured from a job
    target, reference = _files(tmp_path)
    job_id, sizes = create_and_upload(api, target, reference)
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    headers, body = webhook_env.requests[0]
    receiver = Webhook(SECRET)

    # Then a tampered body fails verification
    tampered = body.replace(b'"succeeded"', b'"failed"', 1)
    with pytest.raises(WebhookVerificationError):
        receiver.verify(tampered, headers)
    # And a message re-signed with a timestamp ten minutes old fails the window
    old = datetime.now(UTC) - timedelta(minutes=10)
    stale = {
        **headers,
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": receiver.sign(headers["webhook-id"], old, body.decode()),
    }
    with pytest.raises(WebhookVerificationError):
        receiver.verify(body, stale)
    # And another secret does not verify it
    other = "whsec_" + base64.b64encode(b"some-other-secret-of-32-bytes!!!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.slow
def test_failed_job_sends_job_failed_with_its_error(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    webhook_env: Receiver,
    tmp_path: Path,
) -> None:
    # Given a job whose target is not audio
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"not audio at all\n" * 100)
    _, reference = _files(tmp_path)
    job_id, sizes = create_and_upload(api, notes, reference)
    # When it runs
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    # Then the webhook says job.failed with the error code
    headers, body = webhook_env.requests[0]
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.failed"
    assert payload["data"]["error"]["code"] == "invalid_audio"


def test_master_death_also_sends_job_failed(
    api: ApiClient, stack: Stack, webhook_env: Receiver, tmp_path: Path
) -> None:
    from mastering.jobs.model import JobStatus, Stage
    from tests.conftest import s3_event_for

    # Given a job in processing whose master invocation timed out
    target, _ = _files(tmp_path)
    job_id, _ = create_and_upload(api, target, None, preset="warm")
    store = stack.store()
    store.transition(
        job_id,
        JobStatus.AWAITING_UPLOAD,
        JobStatus.QUEUED,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        stage=Stage.QUEUED,
        percent=0,
    )
    store.transition(
        job_id,
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        stage=Stage.MATCHING,
        percent=40,
    )
    record = load_event("lifecycle-master-failure.json")
    record["requestPayload"] = s3_event_for(f"uploads/{job_id}/target", 1000)
    # When the lifecycle function handles the failure
    load_handler("presign", "lifecycle").handler(record, FakeLambdaContext(60, "lifecycle"))
    # Then a job.failed webhook with processing_timeout went out
    payload = Webhook(SECRET).verify(webhook_env.requests[0][1], webhook_env.requests[0][0])
    assert payload["type"] == "job.failed"
    assert payload["data"]["error"]["code"] == "processing_timeout"


def _sender(
    url: str, answers: list[int], *, allow_loopback: bool = True
) -> tuple[WebhookSender, list[dict[str, str]], list[float]]:
    sent: list[dict[str, str]] = []
    slept: list[float] = []

    def post(destination: Any, body: bytes, headers: dict[str, str]) -> int:
        sent.append(headers)
        answer = answers.pop(0)
        if answer == 0:
            raise ConnectionResetError("network down")
        return answer

    sender = WebhookSender(
        WebhookTarget(url, SECRET, allow_loopback=allow_loopback), post=post, sleep=slept.append
    )
    return sender, sent, slept


def test_retries_on_500_429_and_network_errors_then_succeeds_with_one_message_id() -> None:
    # Given a receiver that fails three ways before accepting
    sender, sent, slept = _sender("http://127.0.0.1:9/hook", [500, 429, 0, 200])
    # When an event is sent
    outcome = sender.send("job.succeeded", {"job_id": "x"}, message_id="msg_x", budget_s=60)
    # Then it was delivered on the fourth attempt, backing off, with the same id each time
    assert (outcome.state, outcome.attempts, outcome.status_code) == ("delivered", 4, 200)
    assert slept == [1.0, 2.0, 4.0]
    assert {headers["webhook-id"] for headers in sent} == {"msg_x"}


def test_gives_up_at_once_on_other_4xx() -> None:
    sender, _sent, _ = _sender("http://127.0.0.1:9/hook", [410])
    outcome = sender.send("job.failed", {}, message_id="msg_y", budget_s=60)
    assert (outcome.state, outcome.attempts, outcome.status_code) == ("failed", 1, 410)


def test_retries_stop_when_the_time_budget_runs_out() -> None:
    sender, sent, _ = _sender("http://127.0.0.1:9/hook", [503] * 10)
    outcome = sender.send("job.failed", {}, message_id="msg_z", budget_s=3.5)
    # 1 s + 2 s of backoff fit in 3.5 s; a third wait of 4 s does not
    assert outcome.state == "failed"
    assert len(sent) == 3


@pytest.mark.parametrize(
    ("url", "addresses", "allow_loopback"),
    [
        ("https://hooks.example.com/x", ["10.0.0.5"], False),
        ("https://hooks.example.com/x", ["192.168.1.10"], False),
        ("https://hooks.example.com/x", ["172.16.0.1"], False),
        ("https://metadata.example.com/x", ["169.254.169.254"], False),
        ("https://metadata.example.com/x", ["fd00:ec2::254"], False),
        ("https://hooks.example.com/x", ["100.64.0.1"], False),
        ("https://hooks.example.com/x", ["93.184.216.34", "10.0.0.5"], False),  # any bad one
        ("https://hooks.example.com/x", ["::ffff:10.0.0.5"], False),
        ("https://localhost/x", ["127.0.0.1"], False),  # loopback unless the local stack
        ("http://hooks.example.com/x", ["93.184.216.34"], False),  # plain http in AWS
        ("http://hooks.example.com/x", ["93.184.216.34"], True),  # and even locally
        ("http://127.0.0.1/x", ["127.0.0.1", "10.0.0.1"], True),
        ("ftp://hooks.example.com/x", ["93.184.216.34"], False),
        ("https://user:pw@hooks.example.com/x", ["93.184.216.34"], False),
    ],
)
def test_non_public_or_insecure_destinations_are_refused_before_connecting(
    url: str, addresses: list[str], allow_loopback: bool
) -> None:
    target = WebhookTarget(url, SECRET, allow_loopback=allow_loopback)
    with pytest.raises(WebhookRefused):
        resolve_destination(target, resolver=lambda host, port: addresses)


def test_public_https_and_local_loopback_are_allowed() -> None:
    public = resolve_destination(
        WebhookTarget("https://hooks.example.com/in?x=1", SECRET),
        resolver=lambda host, port: ["93.184.216.34"],
    )
    assert (public.address, public.port, public.path) == ("93.184.216.34", 443, "/in?x=1")
    local = resolve_destination(
        WebhookTarget("http://127.0.0.1:8000/hook", SECRET, allow_loopback=True),
        resolver=lambda host, port: ["127.0.0.1"],
    )
    assert (local.address, local.port) == ("127.0.0.1", 8000)


@pytest.mark.slow
def test_refused_webhook_never_fails_a_succeeded_job(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mastering.config import WebhookSettings

    # Given a deployment misconfigured with a private webhook address
    stack.configure(webhook=WebhookSettings(url="https://10.20.30.40/hook", secret=SECRET))
    target, reference = _files(tmp_path)
    job_id, sizes = create_and_upload(api, target, reference)
    # When the job runs
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    # Then the job still succeeded and the refusal is recorded
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "succeeded"
    webhook = _stored_webhook(stack, job_id)
    assert webhook is not None
    assert (webhook["state"], webhook["attempts"]) == ("refused", 0)
