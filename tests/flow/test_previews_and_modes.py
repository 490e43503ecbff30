"""Previews, the preview and analyze modes, and every job's analysis, through the
functions on moto, judged by ffmpeg's meter on the files (DESIGN "Previews and modes")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.audio_factory import best_correlation, material, write_wav
from tests.conftest import ApiClient, Stack
from tests.jobflow import create_and_upload, deliver
from tests.oracles import ffmpeg_meter

RATE = 44_100
# DESIGN's promise for the analysis against ffmpeg's ebur128 (0.5 LU, 0.5 dB).
LOUDNESS_TOLERANCE_LU = 0.5
PEAK_TOLERANCE_DB = 0.5


def _loud_in_the_middle(seconds: float, loud_from_s: float, loud_to_s: float) -> np.ndarray:
    samples = material("quiet_dynamic", seconds, RATE) * np.float32(0.15)
    loud = slice(round(loud_from_s * RATE), round(loud_to_s * RATE))
    samples[loud] = material("dense_loud", loud_to_s - loud_from_s, RATE, seed=5) * np.float32(0.5)
    return samples


@pytest.fixture(scope="module")
def long_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 40 s, quiet but for a loud stretch from 8 s to 38 s: the preview's window
    folder = tmp_path_factory.mktemp("previews")
    return write_wav(folder / "long song.wav", _loud_in_the_middle(40.0, 8.0, 38.0), RATE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    return write_wav(folder / "reference.wav", material("bass_heavy", 20.0, RATE, seed=9), RATE)


def _download(url: str, dest: Path) -> Path:
    response = requests.get(url, timeout=60)
    response.raise_for_status()
    dest.write_bytes(response.content)
    return dest


def _run(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path | None,
    **body: Any,
) -> dict[str, Any]:
    job_id, sizes = create_and_upload(api, target, reference, **body)
    for role, size in sizes.items():
        deliver(invoke_master, job_id, role, size)
    job: dict[str, Any] = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded", job
    return job


def _assert_agrees_with_ffmpeg(measured: dict[str, Any], path: Path) -> None:
    oracle = ffmpeg_meter(path)
    assert measured["lufs"] == pytest.approx(oracle.lufs, abs=LOUDNESS_TOLERANCE_LU)
    assert measured["loudness_range_lu"] == pytest.approx(oracle.lra, abs=LOUDNESS_TOLERANCE_LU)
    assert measured["true_peak_dbtp"] == pytest.approx(oracle.true_peak_dbtp, abs=PEAK_TOLERANCE_DB)
    assert measured["sample_peak_dbfs"] == pytest.approx(
        oracle.sample_peak_dbfs, abs=PEAK_TOLERANCE_DB
    )


def test_previews_are_the_loudest_thirty_seconds_faded_and_level_matched(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    long_target: Path,
    reference: Path,
    tmp_path: Path,
) -> None:
    # Given a 40-s target whose loud stretch is 8..38 s, mastered with previews
    job = _run(api, invoke_master, long_target, reference, outputs=["wav16"], previews=True)
    results = job["results"]
    # Then the results list both previews beside the master, as MP3s
    assert set(results) == {"wav16", "preview_target", "preview_result"}
    original = _download(results["preview_target"]["url"], tmp_path / "a.mp3")
    mastered = _download(results["preview_result"]["url"], tmp_path / "b.mp3")
    for path in (original, mastered):
        info = sf.info(str(path))
        assert info.format == "MP3"
        # 30 s (an MP3 adds a frame or two of padding)
        assert info.duration == pytest.approx(30.0, abs=0.2)
        samples, rate = sf.read(str(path), dtype="float32")
        # faded in and out over a second
        assert np.max(np.abs(samples[: rate // 50])) < 0.01
        assert np.max(np.abs(samples[-rate // 50 :])) < 0.01
        assert np.max(np.abs(samples[rate * 10 : rate * 20])) > 0.1
    # And the original's excerpt is the loud stretch: its level is the loud part's,
    # brought to the master's loudness (ffmpeg reads both within 1 LU), and both keep
    # the ceiling as decoded
    a, b = ffmpeg_meter(original), ffmpeg_meter(mastered)
    assert a.lufs == pytest.approx(b.lufs, abs=1.0)
    assert b.lufs == pytest.approx(results["wav16"]["lufs"], abs=1.5)
    ceiling = job["mastering"]["true_peak_dbtp"]
    for reading in (a, b):
        assert reading.true_peak_dbtp <= ceiling + 0.15
    window = slice(8 * RATE, 38 * RATE)
    source, _ = sf.read(str(long_target), dtype="float32")
    decoded, _ = sf.read(str(original), dtype="float32")
    # (same audio up to a gain and the MP3's delay: a strong correlation at some lag;
    # the middle 20 s, clear of the fades)
    middle = slice(5 * RATE, 25 * RATE)
    assert best_correlation(source[window][middle], decoded[middle]) > 0.8


def test_analysis_of_a_master_job_agrees_with_ffmpeg(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    long_target: Path,
    reference: Path,
    tmp_path: Path,
) -> None:
    # Given a mastered job
    job = _run(api, invoke_master, long_target, reference, outputs=["wav24"])
    analysis = job["analysis"]
    # Then it measured target, reference and result on one set of >= 16 bands
    centres = analysis["band_centres_hz"]
    assert len(centres) >= 16
    assert centres == sorted(centres)
    for role in ("target", "reference", "result"):
        assert len(analysis[role]["bands_db"]) == len(centres), role
    # And each agrees with ffmpeg's ebur128 on the file itself (the result as the
    # 24-bit WAV the client downloads)
    result = _download(job["results"]["wav24"]["url"], tmp_path / "result.wav")
    _assert_agrees_with_ffmpeg(analysis["target"], long_target)
    _assert_agrees_with_ffmpeg(analysis["reference"], reference)
    _assert_agrees_with_ffmpeg(analysis["result"], result)
    # And the bass-heavy reference's spectrum tilts to the bass, as measured
    bands = analysis["reference"]["bands_db"]
    low = [level for centre, level in zip(centres, bands, strict=True) if centre < 200]
    high = [level for centre, level in zip(centres, bands, strict=True) if centre > 4000]
    assert np.mean(low) > np.mean(high) + 10


def test_preview_mode_renders_only_the_previews(
    api: ApiClient,
    stack: Stack,
    invoke_master: Callable[..., Any],
    long_target: Path,
    reference: Path,
) -> None:
    # Given a preview job
    job = _run(api, invoke_master, long_target, reference, mode="preview")
    # Then the results are the two previews only, with the window's analysis
    assert job["mode"] == "preview"
    assert job["previews"] is True
    assert set(job["results"]) == {"preview_target", "preview_result"}
    assert {"target", "reference", "result"} <= set(job["analysis"])
    assert (
        job["results"]["preview_result"]["true_peak_dbtp"]
        <= job["mastering"]["true_peak_dbtp"] + 0.15
    )
    assert stack.leftovers() == []


def test_analyze_mode_measures_without_a_reference_and_renders_nothing(
    api: ApiClient, stack: Stack, invoke_master: Callable[..., Any], long_target: Path
) -> None:
    # Given an analyze job: only a target, no reference, no preset
    job = _run(api, invoke_master, long_target, None, mode="analyze")
    # Then it succeeded with the target's analysis and no files
    assert job["results"] == {}
    assert set(job["analysis"]) == {"target", "band_centres_hz"}
    _assert_agrees_with_ffmpeg(job["analysis"]["target"], long_target)
    assert job["metrics"]["target_lufs"] == job["analysis"]["target"]["lufs"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"mode": "analyze", "preset": "warm"}, "no preset"),
        ({"mode": "preview", "preset": "warm", "outputs": ["mp3"]}, "outputs"),
        ({"mode": "mix", "preset": "warm"}, "mode"),
        ({"previews": "yes", "preset": "warm"}, "previews"),
    ],
)
def test_modes_and_previews_are_validated(
    api: ApiClient, body: dict[str, Any], fragment: str
) -> None:
    target = {"filename": "a.wav", "size": 1000, "content_type": "audio/wav"}
    response = api.call("POST", "/jobs", body={"target": target, **body})
    assert response.status == 400
    assert fragment in response.body["error"]["message"]
