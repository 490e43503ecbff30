"""The whole job path, as in AWS but on moto: create → presigned POST upload over real
HTTP → S3 events to the master handler → GET → download through the presigned URL."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import requests
import soundfile as sf

from tests.audio_factory import tone_mix, write_wav
from tests.conftest import ApiClient, Stack, load_handler, s3_event_for
from tests.jobflow import create_and_upload, deliver
from tests.oracles import ffmpeg_meter

RATE = 44_100

pytestmark = pytest.mark.slow


def _lufs(samples: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples))


@pytest.fixture
def quiet_target(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "my song.wav", tone_mix(8.0, RATE, seed=1, peak_dbfs=-18.0), RATE)


@pytest.fixture
def loud_reference(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "reference.wav", tone_mix(8.0, RATE, seed=2, peak_dbfs=-1.0), RATE)


def test_job_is_mastered_end_to_end(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    quiet_target: Path,
    loud_reference: Path,
) -> None:
    # Given a quiet target and a loud reference, uploaded through the presigned POSTs
    job_id, sizes = create_and_upload(
        api, quiet_target, loud_reference, outputs=["wav16", "wav24", "flac", "mp3"]
    )
    waiting = api.call("GET", f"/jobs/{job_id}").body
    assert waiting["status"] == "awaiting_upload"

    # When S3 tells the master function about each upload
    deliver(invoke_master, job_id, "target", sizes["target"])
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "awaiting_upload"
    deliver(invoke_master, job_id, "reference", sizes["reference"])

    # Then the job has succeeded with every format and its metrics
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == {"stage": "done", "percent": 100}
    assert job["error"] is None
    assert set(job["results"]) == {"wav16", "wav24", "flac", "mp3"}
    metrics = job["metrics"]
    assert set(metrics) == {
        "duration_s",
        "target_lufs",
        "reference_lufs",
        "result_lufs",
        "result_true_peak_dbtp",
        "processing_s",
    }
    assert metrics["duration_s"] == pytest.approx(8.0, abs=0.01)
    assert metrics["processing_s"] > 0

    # And the 16-bit result, downloaded through its presigned URL, is the mastered track
    download = requests.get(job["results"]["wav16"]["url"], timeout=30)
    assert download.status_code == 200
    assert "my%20song-mastered.wav" in download.headers.get("content-disposition", "")
    assert len(download.content) == job["results"]["wav16"]["size"]
    mastered, rate = sf.read(io.BytesIO(download.content), always_2d=True)
    target, _ = sf.read(quiet_target, always_2d=True)
    reference, _ = sf.read(loud_reference, always_2d=True)
    assert sf.info(io.BytesIO(download.content)).subtype == "PCM_16"
    assert rate == RATE
    assert mastered.shape[0] == target.shape[0]  # same duration, to the sample
    peak = float(np.max(np.abs(mastered)))
    assert 0.01 < peak < 1.0  # not silent, never clipping
    # And by default it lands at the reference's loudness, under -1 dBTP
    wanted, after = _lufs(reference, RATE), _lufs(mastered, RATE)
    assert job["mastering"]["loudness"] == "reference"
    assert job["mastering"]["loudness_lufs"] == pytest.approx(wanted, abs=0.05)
    assert after == pytest.approx(wanted, abs=0.5)
    assert metrics["result_lufs"] == pytest.approx(after, abs=0.2)
    assert metrics["result_true_peak_dbtp"] <= -1.0
    assert job["warnings"] == []
    # And every result says its own loudness and true peak, the MP3's measured decoded
    for fmt, result in job["results"].items():
        assert result["lufs"] == pytest.approx(after, abs=0.5), fmt
        assert result["true_peak_dbtp"] <= -1.0, fmt

    # And the 24-bit WAV is really 24-bit
    wav24 = requests.get(job["results"]["wav24"]["url"], timeout=30).content
    assert sf.info(io.BytesIO(wav24)).subtype == "PCM_24"

    # And the function left nothing in /tmp
    assert stack.leftovers() == []


@pytest.mark.parametrize("order", [("reference", "target"), ("target", "reference")])
def test_each_event_delivered_twice_in_either_order_runs_the_job_once(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    quiet_target: Path,
    loud_reference: Path,
    monkeypatch: pytest.MonkeyPatch,
    order: tuple[str, str],
) -> None:
    import mastering.pipeline
    from mastering.worker.isolation import run_inline

    runs: list[str] = []
    real = mastering.pipeline.master_files

    def counting(request: Any, on_progress: Any) -> Any:
        runs.append(str(request.target))
        return real(request, on_progress)

    monkeypatch.setattr(mastering.pipeline, "master_files", counting)
    # Counted in this process: the master function runs the work inline.
    load_handler("master").configure(stack.settings, isolate=run_inline)

    # Given both files uploaded
    job_id, sizes = create_and_upload(api, quiet_target, loud_reference)

    # When S3 delivers every event twice, in the given order
    for role in order:
        deliver(invoke_master, job_id, role, sizes[role])
        deliver(invoke_master, job_id, role, sizes[role])
    # and once more after the job has finished
    deliver(invoke_master, job_id, order[0], sizes[order[0]])

    # Then the job ran exactly once and succeeded
    assert len(runs) == 1
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "succeeded"


def test_options_are_applied_and_echoed(
    api: ApiClient, invoke_master: Callable[..., Any], quiet_target: Path, tmp_path: Path
) -> None:
    # Given a job for Apple Music's loudness under a -2 dBTP ceiling, by preset name
    job_id, sizes = create_and_upload(
        api,
        quiet_target,
        None,
        preset="Hip-Hop",
        outputs=["wav24", "mp3"],
        mastering={"loudness": "apple_music", "true_peak_dbtp": -2.0, "intensity": 0.5},
    )
    # When the target lands
    deliver(invoke_master, job_id, "target", sizes["target"])
    # Then the job says what it resolved and applied
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded", job["error"]
    assert job["mastering"] == {
        "loudness": "apple_music",
        "loudness_lufs": -16.0,
        "true_peak_dbtp": -2.0,
        "intensity": 0.5,
        "limiter": "true_peak",
    }
    # And each downloaded file measures so with ffmpeg's meter
    for fmt, result in job["results"].items():
        path = tmp_path / f"result.{'mp3' if fmt == 'mp3' else 'wav'}"
        path.write_bytes(requests.get(result["url"], timeout=30).content)
        reading = ffmpeg_meter(path)
        assert reading.true_peak_dbtp <= -2.0, fmt
        assert reading.lufs == pytest.approx(-16.0, abs=0.5), fmt
        assert result["lufs"] == pytest.approx(reading.lufs, abs=0.1), fmt


def test_preset_job_needs_only_the_target(
    api: ApiClient, invoke_master: Callable[..., Any], quiet_target: Path
) -> None:
    # Given a job against the "loud" preset
    job_id, sizes = create_and_upload(api, quiet_target, None, preset="loud")
    # When the target lands
    deliver(invoke_master, job_id, "target", sizes["target"])
    # Then the job succeeds and the result is much louder than the target
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["result_lufs"] > job["metrics"]["target_lufs"] + 6
    assert job["metrics"]["reference_lufs"] is not None


def test_uploads_in_one_event_with_both_records(
    api: ApiClient, invoke_master: Callable[..., Any], quiet_target: Path, loud_reference: Path
) -> None:
    # Given both uploads reported in a single event with two records
    job_id, sizes = create_and_upload(api, quiet_target, loud_reference)
    event = s3_event_for(f"uploads/{job_id}/target", sizes["target"])
    event["Records"] += s3_event_for(f"uploads/{job_id}/reference", sizes["reference"])["Records"]
    # When the master handles it
    result = invoke_master(event)
    # Then the job ran once, to success
    assert result["jobs"] == {job_id: "succeeded"}
