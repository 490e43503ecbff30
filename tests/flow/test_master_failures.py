"""Every way a job can go wrong ends in a terminal state with a code a client can act
on, no results left behind, and nothing left in the function's /tmp."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mastering.audio.ffmpeg import find_ffmpeg
from tests.audio_factory import silence, tone_mix, write_wav
from tests.conftest import (
    ApiClient,
    FakeLambdaContext,
    Stack,
    emulated_s3,
    function_settings,
    load_event,
    load_handler,
    s3_event_for,
)
from tests.jobflow import create_and_upload, declare, upload_file

RATE = 44_100

pytestmark = pytest.mark.slow


def _results_in_bucket(job_id: str) -> list[str]:
    s3 = emulated_s3()
    listing = s3.list_objects_v2(
        Bucket=function_settings().results_bucket, Prefix=f"results/{job_id}/"
    )
    return [obj["Key"] for obj in listing.get("Contents", [])]


def _run(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path | None,
    *,
    remaining_s: float = 900.0,
    preset: str | None = None,
) -> dict[str, Any]:
    extra = {"preset": preset} if preset else {}
    job_id, sizes = create_and_upload(api, target, reference, **extra)
    for role, size in sizes.items():
        invoke_master(s3_event_for(f"uploads/{job_id}/{role}", size), remaining_s=remaining_s)
    job = api.call("GET", f"/jobs/{job_id}").body
    assert _results_in_bucket(job_id) == []
    return job


def _assert_failed(job: dict[str, Any], code: str, stack: Stack) -> None:
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code
    message = job["error"]["message"]
    assert message
    assert "Traceback" not in message
    assert "/tmp" not in message
    assert job["results"] == {}
    assert job["progress"]["stage"] == "failed"
    assert stack.leftovers() == []


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "reference.wav", tone_mix(6.0, RATE, seed=7, peak_dbfs=-1.0), RATE)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "target.wav", tone_mix(6.0, RATE, seed=8, peak_dbfs=-12.0), RATE)


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _id3_tag(body_size: int = 300) -> bytes:
    size = bytes((body_size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + size + bytes(body_size)


def _ffmpeg_file(path: Path, *args: str) -> Path:
    subprocess.run(
        [find_ffmpeg(None), "-nostdin", "-loglevel", "error", *args, str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def _tagged_sun_au(d: Path) -> Path:
    wav = write_wav(d / "plain.wav", tone_mix(6.0, RATE, seed=12), RATE)
    au = _ffmpeg_file(d / "plain.au", "-i", str(wav), "-f", "au")
    return _file(d, "tagged.wav", _id3_tag() + au.read_bytes())


def _tagged_cut_wav(d: Path) -> Path:
    whole = write_wav(d / "whole.wav", tone_mix(6.0, RATE, seed=13), RATE).read_bytes()
    return _file(d, "tagged-cut.wav", _id3_tag() + whole[: len(whole) // 2])


def _surround_bomb(d: Path) -> Path:
    # Under a megabyte: 30 s of 7.1 at 384 kHz in FLAC-in-MP4 (370 MB as float32)
    return _ffmpeg_file(
        d / "bomb.mp4",
        *("-f", "lavfi", "-i", "anullsrc=r=384000:cl=7.1:d=30"),
        *("-c:a", "flac", "-strict", "experimental", "-f", "mp4"),
    )


BAD_TARGETS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "text named .wav": (
        lambda d: _file(d, "notes.wav", b"these are my lyrics, not audio\n" * 50),
        "invalid_audio",
    ),
    "HLS playlist named .wav": (
        lambda d: _file(
            d,
            "stream.wav",
            b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
            b"http://169.254.169.254/latest/meta-data/seg0.ts\n#EXT-X-ENDLIST\n",
        ),
        "invalid_audio",
    ),
    "truncated WAV": (
        lambda d: _file(
            d,
            "cut.wav",
            write_wav(d / "whole.wav", tone_mix(6.0, RATE, seed=3), RATE).read_bytes()[:200_000],
        ),
        "invalid_audio",
    ),
    "0.05 s of audio": (
        lambda d: write_wav(d / "blip.wav", tone_mix(0.05, RATE, seed=4), RATE),
        "audio_too_short",
    ),
    "digital silence": (
        lambda d: write_wav(d / "silence.wav", silence(6.0, RATE), RATE),
        "silent_audio",
    ),
    "six channels": (
        lambda d: write_wav(d / "surround.wav", tone_mix(6.0, RATE, channels=6, seed=5), RATE),
        "unsupported_format",
    ),
    "7.1 at 384 kHz in a small MP4": (_surround_bomb, "unsupported_format"),
    "ID3 tag before a Sun AU file": (_tagged_sun_au, "invalid_audio"),
    "ID3 tag before a truncated WAV": (_tagged_cut_wav, "invalid_audio"),
    "float samples at +594 dBFS": (
        lambda d: write_wav(
            d / "huge.wav", tone_mix(6.0, RATE, seed=14) * np.float32(1e30), RATE, "FLOAT"
        ),
        "invalid_audio",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_bad_target_fails_with_its_code(
    case: str,
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    tmp_path: Path,
    reference: Path,
) -> None:
    # Given a bad target and a good reference
    make, code = BAD_TARGETS[case]
    bad = make(tmp_path)
    # When both are uploaded and processed
    job = _run(api, invoke_master, bad, reference)
    # Then the job failed with the code for this problem
    _assert_failed(job, code, stack)


def test_bad_reference_is_named_in_the_error(
    api: ApiClient, stack: Stack, invoke_master: Callable[..., Any], tmp_path: Path, target: Path
) -> None:
    silent = write_wav(tmp_path / "silent-ref.wav", silence(6.0, RATE), RATE)
    job = _run(api, invoke_master, target, silent)
    _assert_failed(job, "silent_audio", stack)
    assert "reference" in job["error"]["message"]


def test_zero_byte_target_fails_as_invalid_audio(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    tmp_path: Path,
    reference: Path,
) -> None:
    # Given a job declared for a real file, but an empty body uploaded (moto, unlike S3,
    # does not enforce the policy's minimum size)
    empty = _file(tmp_path, "empty.wav", b"")
    created = api.call("POST", "/jobs", body={"target": declare(reference), "preset": "warm"})
    upload = created.body["uploads"]["target"]
    upload_file(upload, empty)
    # When the event arrives
    invoke_master(s3_event_for(f"uploads/{created.body['job_id']}/target", 0))
    # Then
    _assert_failed(api.call("GET", f"/jobs/{created.body['job_id']}").body, "invalid_audio", stack)


def test_target_identical_to_reference_fails(
    api: ApiClient, stack: Stack, invoke_master: Callable[..., Any], tmp_path: Path, target: Path
) -> None:
    twin = tmp_path / "twin.wav"
    twin.write_bytes(target.read_bytes())
    _assert_failed(_run(api, invoke_master, target, twin), "identical_inputs", stack)


def test_track_longer_than_the_limit_fails(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    tmp_path: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stack that allows 5 seconds, a 6-second target and a 4-second reference
    stack.configure(max_duration_s=5.0)
    long_target = write_wav(tmp_path / "long.wav", tone_mix(6.0, RATE), RATE)
    short_reference = write_wav(
        tmp_path / "short-ref.wav", tone_mix(4.0, RATE, seed=11, peak_dbfs=-1.0), RATE
    )
    # When it is processed
    job = _run(api, invoke_master, long_target, short_reference)
    # Then it failed as too long, saying the limit
    _assert_failed(job, "audio_too_long", stack)
    assert "5" in job["error"]["message"]


def test_upload_bigger_than_declared_fails_before_download(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    tmp_path: Path,
    target: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a job declared at 1000 bytes, and a whole track uploaded anyway (S3 would refuse
    # it by the policy; moto does not, so the function must check)
    created = api.call(
        "POST",
        "/jobs",
        body={"target": {**declare(target), "size": 1000}, "preset": "warm"},
    ).body
    upload_file(created["uploads"]["target"], target)
    from mastering.storage.objects import S3Storage

    downloads: list[str] = []
    monkeypatch.setattr(S3Storage, "download", lambda self, *a, **k: downloads.append(a[1]))
    # When the event arrives
    invoke_master(s3_event_for(f"uploads/{created['job_id']}/target", target.stat().st_size))
    # Then the job failed as too large without downloading anything
    _assert_failed(api.call("GET", f"/jobs/{created['job_id']}").body, "file_too_large", stack)
    assert downloads == []


def _engine(monkeypatch: pytest.MonkeyPatch, replacement: Callable[..., Any]) -> None:
    import mastering.pipeline

    monkeypatch.setattr(mastering.pipeline, "master_track", replacement)


def test_engine_exception_fails_with_internal_error_and_no_details(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail at /var/task/x.py")

    _engine(monkeypatch, explode)
    job = _run(api, invoke_master, target, reference)
    _assert_failed(job, "internal_error", stack)
    assert "secret" not in job["error"]["message"]


def test_worker_killed_mid_processing_fails_the_job_without_blaming_memory(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an engine that is killed mid-way while using little memory (an operator, a
    # runtime shutting down: not the OOM killer)
    def killed(target: Any, profile: Any, options: Any, on_progress: Callable[..., Any]) -> Any:
        on_progress(_stage("matching"), 50)
        os.kill(os.getpid(), signal.SIGKILL)

    _engine(monkeypatch, killed)
    job = _run(api, invoke_master, target, reference)
    # Then the job failed with internal_error, saying it stopped, not that memory ran out
    _assert_failed(job, "internal_error", stack)
    assert job["error"]["message"] == "Mastering stopped unexpectedly"
    assert job["progress"]["percent"] == 50


def test_worker_killed_when_its_memory_ran_out_says_so(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a sandbox with 400 MB and an engine killed once it holds 350 MB of it, as the
    # kernel's OOM killer does
    import mastering.worker.isolation

    monkeypatch.setattr(mastering.worker.isolation, "available_memory_bytes", lambda: 400 * 2**20)

    def hog(target: Any, profile: Any, options: Any, on_progress: Callable[..., Any]) -> Any:
        held = np.ones(350 * 2**20, dtype=np.uint8)
        on_progress(_stage("matching"), 50)
        time.sleep(0.6)
        assert held[-1] == 1
        os.kill(os.getpid(), signal.SIGKILL)

    _engine(monkeypatch, hog)
    job = _run(api, invoke_master, target, reference)
    # Then the job failed with internal_error, saying memory ran out and what to try
    _assert_failed(job, "internal_error", stack)
    assert job["error"]["message"] == (
        "Mastering ran out of memory; try a shorter track or a lower sample rate"
    )


def _stage(name: str) -> Any:
    from mastering.jobs.model import Stage

    return Stage(name)


def test_job_longer_than_the_function_timeout_fails_as_timeout(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given an engine slower than the time the function has left, because an ffmpeg it
    # started runs on (as a decode of a long file would)
    pid_file = tmp_path / "ffmpeg.pid"

    def slow(*args: Any, **kwargs: Any) -> Any:
        from mastering.audio.ffmpeg import start_ffmpeg

        slow_ffmpeg = ["-nostdin", "-re", "-f", "lavfi", "-i", "anullsrc=d=120", "-f", "null", "-"]
        process = start_ffmpeg(slow_ffmpeg, ffmpeg_path=None, stderr_path=tmp_path / "ff.log")
        pid_file.write_text(str(process.pid))
        process.wait()

    _engine(monkeypatch, slow)
    started = time.monotonic()
    # When the master runs with 6 seconds left
    job = _run(api, invoke_master, target, reference, remaining_s=6.0)
    # Then it stopped the work before its deadline and failed the job as a timeout
    assert time.monotonic() - started < 30
    _assert_failed(job, "processing_timeout", stack)
    # And the ffmpeg the work started is gone too: nothing writes on into /tmp
    ffmpeg = int(pid_file.read_text())
    try:
        assert _gone_within(ffmpeg, seconds=3.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ffmpeg, signal.SIGKILL)


def _gone_within(pid: int, *, seconds: float) -> bool:
    """Whether ``pid`` stops running (exits, or is left a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _job_in_processing(api: ApiClient, stack: Stack, target: Path) -> str:
    """A job the master function took and then died on (uploads done, status processing)."""
    from mastering.jobs.model import JobStatus, Stage

    job_id, _ = create_and_upload(api, target, None, preset="warm")
    store = stack.store()
    for old, new, stage in (
        (JobStatus.AWAITING_UPLOAD, JobStatus.QUEUED, Stage.QUEUED),
        (JobStatus.QUEUED, JobStatus.PROCESSING, Stage.MATCHING),
    ):
        assert (
            store.transition(
                job_id,
                old,
                new,
                now=datetime(2026, 1, 1, tzinfo=UTC),
                stage=stage,
                percent=40,
                deadline_at=0,
            )
            is not None
        )
    return job_id


@pytest.mark.parametrize(
    ("lambda_error", "code"),
    [
        ("2026-11-23T10:15:01.998Z abc Task timed out after 900.00 seconds", "processing_timeout"),
        ("RequestId: abc Error: Runtime exited with error: signal: killed", "internal_error"),
    ],
)
def test_master_function_death_is_caught_by_the_on_failure_destination(
    api: ApiClient, stack: Stack, target: Path, lambda_error: str, code: str
) -> None:
    # Given a job whose master invocation died (timeout or out of memory)
    job_id = _job_in_processing(api, stack, target)
    record = copy.deepcopy(load_event("lifecycle-master-failure.json"))
    record["requestPayload"] = s3_event_for(f"uploads/{job_id}/target", 1000)
    record["responsePayload"] = {"errorMessage": lambda_error}
    # When Lambda hands the failed event to the lifecycle function, twice
    lifecycle = load_handler("presign", "lifecycle")
    first = lifecycle.handler(record, FakeLambdaContext(30, "lifecycle"))
    second = lifecycle.handler(record, FakeLambdaContext(30, "lifecycle"))
    # Then the job failed once, with the reason Lambda gave
    assert first == {"failed": [job_id]}
    assert second == {"failed": []}
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "failed"
    assert job["error"]["code"] == code


def test_sweep_expires_abandoned_uploads_and_fails_overdue_jobs(
    api: ApiClient, stack: Stack, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job whose upload window has passed, and a job stuck in processing
    stack.configure(upload_window_s=0)
    abandoned = api.call("POST", "/jobs", body={"target": declare(target), "preset": "warm"})
    stuck = _job_in_processing(api, stack, target)
    # When the scheduled sweep runs
    lifecycle = load_handler("presign", "lifecycle")
    report = lifecycle.handler(load_event("lifecycle-schedule.json"), FakeLambdaContext(30))
    # Then the first expired and the second failed as a timeout
    assert abandoned.body["job_id"] in report["expired"]
    assert stuck in report["failed"]
    expired = api.call("GET", f"/jobs/{abandoned.body['job_id']}").body
    assert expired["status"] == "expired"
    assert expired["error"]["code"] == "upload_expired"
    assert api.call("GET", f"/jobs/{stuck}").body["error"]["code"] == "processing_timeout"


def test_reading_an_overdue_job_expires_it_and_a_late_upload_is_ignored(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    target: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack.configure(upload_window_s=0)
    created = api.call("POST", "/jobs", body={"target": declare(target), "preset": "warm"}).body
    assert api.call("GET", f"/jobs/{created['job_id']}").body["status"] == "expired"
    # A late upload changes nothing
    upload_file(created["uploads"]["target"], target)
    result = invoke_master(s3_event_for(f"uploads/{created['job_id']}/target", 10))
    assert result == {"jobs": {}}
    assert api.call("GET", f"/jobs/{created['job_id']}").body["status"] == "expired"


def test_objects_outside_the_upload_scheme_are_ignored(
    api: ApiClient, invoke_master: Callable[..., Any]
) -> None:
    # Keys that are not uploads/{job_id}/{target|reference} never touch a job
    for key in (
        "uploads/not-a-job/target",
        "results/x/mastered.wav",
        "uploads/../../etc",
        "uploads/3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b/target/extra",
    ):
        assert invoke_master(s3_event_for(key, 10)) == {"jobs": {}}
    # nor does an upload reported from another bucket
    created = api.call("POST", "/jobs", body={"target": WAV_DECL, "preset": "warm"}).body
    other = s3_event_for(f"uploads/{created['job_id']}/target", 10, bucket="someone-elses")
    assert invoke_master(other) == {"jobs": {}}
    assert api.call("GET", f"/jobs/{created['job_id']}").body["status"] == "awaiting_upload"


WAV_DECL = {"filename": "a.wav", "size": 1000, "content_type": "audio/wav"}
