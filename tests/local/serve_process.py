"""`mastering serve` as a separate process, the way a user starts it.

Nothing from the project is imported: the stack is a black box reached through its
HTTP API, as the Spectrum app, the edge function or curl would reach it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.jobflow import post_upload

API_KEY = "serve-flow-key"
# Guards against a hung stack, not performance checks.
READY_DEADLINE_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env() -> dict[str, str]:
    """A user's shell: none of the settings the test session sets for itself (the
    functions' names, Powertools' namespace...), which would hide what `mastering
    serve` forgets to set."""
    from tests.conftest import TEST_ENV_NAMES

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MASTERING_") and k not in TEST_ENV_NAMES
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve_command(api_port: int, s3_port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mastering.cli",
        "serve",
        "--api-port",
        str(api_port),
        "--s3-port",
        str(s3_port),
        "--api-key",
        API_KEY,
        *extra,
    ]


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    api: str
    log: Path
    # The S3 emulator's address (presigned URLs point there).
    s3: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    # Its own session: this also takes down workers a failed stop left behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def running_serve(tmp: Path, *extra: str) -> Iterator[Serve]:
    api_port, s3_port = free_port(), free_port()
    log = tmp / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            serve_command(api_port, s3_port, "--work-dir", str(tmp / "work"), *extra),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=serve_env(),
            start_new_session=True,
        )
    serve = Serve(
        process=process,
        api=f"http://127.0.0.1:{api_port}",
        log=log,
        s3=f"http://127.0.0.1:{s3_port}",
    )
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{serve.output()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{serve.api}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"serve never answered /health:\n{serve.output()}")
            time.sleep(0.2)
        yield serve
    finally:
        _stop(process)


def start_wav_job(serve: Serve, client: requests.Session, audio: bytes, **body: Any) -> str:
    """Create a job for the WAV ``audio`` (the ``balanced`` preset unless ``body`` says
    otherwise) and upload it with its presigned POST; returns the job id."""
    created = client.post(
        f"{serve.api}/jobs",
        json={
            "target": {"filename": "song.wav", "size": len(audio), "content_type": "audio/wav"},
            "preset": "balanced",
            **body,
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    upload = created.json()["uploads"]["target"]
    posted = post_upload(upload, "song.wav", audio, "audio/wav", timeout=60)
    assert posted.status_code in (200, 201, 204), posted.text
    return str(created.json()["job_id"])
