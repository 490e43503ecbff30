"""`mastering serve` as a user runs it: a separate process, driven over real HTTP only.

Nothing from the project is imported here: the stack is a black box reached through
its HTTP API and the presigned S3 URLs it hands out, as the Spectrum app, the edge
function or curl would reach it.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.audio_factory import pcm16_wav_bytes
from tests.local.serve_process import (
    API_KEY,
    Serve,
    free_port,
    running_serve,
    serve_command,
    serve_env,
)

ORIGIN = "https://app.example.test"
RATE = 44_100
# Guards against a hung stack, not performance checks.
JOB_DEADLINE_S = 180.0


def write_wav(path: Path, seconds: float, *, peak: float, harmonics: int, seed: int) -> Path:
    """A 16-bit stereo WAV of a few decaying notes, built with numpy and the wave module."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.exp(-3.0 * np.mod(t, 0.5))
    channels = []
    for _ in range(2):
        voice = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
            for f0 in (110.0, 220.0, 330.0)
            for k in range(1, harmonics + 1)
        )
        channels.append(envelope * (voice + 0.05 * rng.standard_normal(t.size)))
    samples = np.stack(channels, axis=1)
    samples *= peak / np.max(np.abs(samples))
    path.write_bytes(pcm16_wav_bytes(samples, RATE))
    return path


def wav_frames(data: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(data)) as source:
        return source.getnframes(), source.getframerate()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("serve"), "--allowed-origins", ORIGIN) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers.update({"X-Api-Key": API_KEY, "X-Owner-Id": "user-1"})
        yield client


def declare(path: Path, content_type: str = "audio/wav") -> dict[str, Any]:
    return {"filename": path.name, "size": path.stat().st_size, "content_type": content_type}


def upload(form: dict[str, Any], path: Path) -> None:
    with path.open("rb") as handle:
        response = requests.post(
            form["url"],
            data=form["fields"],
            files={"file": (path.name, handle, form["fields"]["Content-Type"])},
            timeout=60,
        )
    assert response.status_code in (200, 201, 204), response.text


def wait_until_terminal(session: requests.Session, api: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = session.get(f"{api}/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "expired"):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish; last seen {job}")


@pytest.mark.slow
def test_job_runs_end_to_end_over_http(
    serve: Serve, session: requests.Session, tmp_path: Path
) -> None:
    # Given a quiet target and a loud, brighter reference
    target = write_wav(tmp_path / "my song.wav", 6.0, peak=0.1, harmonics=2, seed=1)
    reference = write_wav(tmp_path / "reference.wav", 6.0, peak=0.9, harmonics=6, seed=2)

    # When a client creates a job and uploads both files with their presigned POSTs
    created = session.post(
        f"{serve.api}/jobs",
        json={"target": declare(target), "reference": declare(reference), "outputs": ["wav16"]},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["uploads"]["target"]["url"].startswith("http://127.0.0.1:")
    upload(body["uploads"]["target"], target)
    upload(body["uploads"]["reference"], reference)

    # Then the job succeeds
    job = wait_until_terminal(session, serve.api, body["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == {"stage": "done", "percent": 100}
    assert job["metrics"]["result_lufs"] > job["metrics"]["target_lufs"]

    # And the result downloads from the local S3 as a WAV of the target's length
    download = requests.get(job["results"]["wav16"]["url"], timeout=30)
    assert download.status_code == 200
    assert "my%20song-mastered.wav" in download.headers["content-disposition"]
    frames, rate = wav_frames(download.content)
    assert (frames, rate) == (wav_frames(target.read_bytes())[0], RATE)


@pytest.mark.slow
def test_text_uploaded_as_audio_fails_with_invalid_audio(
    serve: Serve, session: requests.Session, tmp_path: Path
) -> None:
    # Given a text file that claims to be a WAV
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my lyrics, not audio\n" * 40)

    # When it is submitted against a preset and uploaded
    created = session.post(
        f"{serve.api}/jobs", json={"target": declare(fake), "preset": "balanced"}, timeout=10
    ).json()
    upload(created["uploads"]["target"], fake)

    # Then the job fails with invalid_audio, and no results
    job = wait_until_terminal(session, serve.api, created["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_audio"
    assert job["results"] == {}


@pytest.mark.slow
def test_gateway_answers_like_api_gateway(serve: Serve, session: requests.Session) -> None:
    # When a browser on an allowed origin sends a CORS preflight
    preflight = requests.options(
        f"{serve.api}/jobs",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
        timeout=10,
    )
    # Then the API answers it from its CORS configuration
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()

    # And real responses carry the origin, for an allowed origin only
    allowed = session.get(f"{serve.api}/presets", headers={"Origin": ORIGIN}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = session.get(f"{serve.api}/presets", headers={"Origin": "https://evil.test"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers

    # And the key is checked, and unknown routes reach the function ($default), whose
    # 404 has the API's own error shape
    unauthorised = requests.get(f"{serve.api}/presets", timeout=10)
    assert unauthorised.status_code == 401
    assert unauthorised.json()["error"]["code"] == "unauthorized"
    missing = session.get(f"{serve.api}/nothing-here", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("taken", "option"), [("api", "--api-port"), ("s3", "--s3-port")])
def test_taken_port_fails_fast_with_one_clear_line(taken: str, option: str) -> None:
    # Given something already listening on one of the two ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        other = free_port()
        api_port, s3_port = (busy, other) if taken == "api" else (other, busy)

        # When serve is started on it
        result = subprocess.run(
            serve_command(api_port, s3_port),
            capture_output=True,
            text=True,
            env=serve_env(),
            timeout=60,
            check=False,
        )

    # Then it exits non-zero with one line naming the port and the option to change
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {busy}" in lines[0]
    assert "already in use" in lines[0]
    assert option in lines[0]


@pytest.mark.slow
def test_sigint_stops_everything_and_exits_0(tmp_path: Path) -> None:
    # Given a running stack with two workers
    with running_serve(tmp_path, "--workers", "2") as running:
        # When it gets SIGINT, as from Ctrl-C
        running.process.send_signal(signal.SIGINT)
        # Then it exits 0 (the wait is a guard against a hang, not a timing check)
        assert running.process.wait(timeout=60) == 0, running.output()
        # And nothing it started is left running
        with pytest.raises(ProcessLookupError):
            os.killpg(running.process.pid, 0)
        assert "stopped" in running.output()
