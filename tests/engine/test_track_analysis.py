"""A track's analysis (DESIGN.md ``analysis``) agrees with ffmpeg's ``ebur128`` meter
on every kind of material at 44.1, 48 and 96 kHz, and never carries what JSON cannot."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mastering.engine.track_analysis import (
    BAND_CENTRES_HZ,
    TrackAnalysis,
    TrackAnalyzer,
    analysis_document,
    analyze_blocks,
    analyze_track,
)
from mastering.engine.true_peak import TruePeakStream, group_true_peaks
from mastering.track import Track
from tests.audio_factory import METER_MATERIALS, material, sine, write_wav
from tests.oracles import ffmpeg_meter

# Agreement with ffmpeg asked by issue 12: 0.5 LU and 0.5 dB. Measured on these
# materials (24 s each): integrated within 0.05 LU; LRA within 0.25 LU, on the
# 35-dB swell, where one short-term value is 0.15 LU above the last (ffmpeg takes
# its percentiles from a histogram, counting differently from Tech 3342: one or two
# values apart; elsewhere within 0.03 LU); true peak within 0.3 dB (ffmpeg reads true
# peak at 192 kHz: only 2x oversampling of 96-kHz material, and its resampler's
# filter rolls off near 44.1 kHz's Nyquist frequency).
LUFS_TOLERANCE_LU = 0.1
LRA_TOLERANCE_LU = 0.3
TRUE_PEAK_TOLERANCE_DB = 0.5
# ffmpeg prints linear peaks with three decimals: 0.017 dB at -12 dBFS.
SAMPLE_PEAK_TOLERANCE_DB = 0.05


@pytest.mark.slow
@pytest.mark.parametrize("rate", [44_100, 48_000, 96_000])
@pytest.mark.parametrize("kind", METER_MATERIALS)
def test_the_analysis_agrees_with_ffmpegs_meter(kind: str, rate: int, tmp_path: Path) -> None:
    # Given a track of each kind, written as float WAV so ffmpeg reads the same samples
    samples = material(kind, 24.0, rate)
    path = write_wav(tmp_path / f"{kind}.wav", samples, rate, "FLOAT")
    # When the engine analyses it and ffmpeg's ebur128 meters it
    ours = analyze_track(Track(samples, rate))
    theirs = ffmpeg_meter(path)
    # Then loudness, loudness range, true peak and sample peak agree
    assert ours.lufs == pytest.approx(theirs.lufs, abs=LUFS_TOLERANCE_LU)
    assert ours.loudness_range_lu == pytest.approx(theirs.lra, abs=LRA_TOLERANCE_LU)
    assert ours.true_peak_dbtp == pytest.approx(theirs.true_peak_dbtp, abs=TRUE_PEAK_TOLERANCE_DB)
    assert ours.sample_peak_dbfs == pytest.approx(
        theirs.sample_peak_dbfs, abs=SAMPLE_PEAK_TOLERANCE_DB
    )


@pytest.mark.slow
def test_a_mono_track_agrees_with_ffmpegs_meter(tmp_path: Path) -> None:
    # Given a mono voice
    samples = material("speech", 24.0, 48_000)[:, :1].copy()
    path = write_wav(tmp_path / "voice.wav", samples, 48_000, "FLOAT")
    # When both meters read it
    ours, theirs = analyze_track(Track(samples, 48_000)), ffmpeg_meter(path)
    # Then they agree as on stereo (one channel, weight 1, for both)
    assert ours.lufs == pytest.approx(theirs.lufs, abs=LUFS_TOLERANCE_LU)
    assert ours.loudness_range_lu == pytest.approx(theirs.lra, abs=LRA_TOLERANCE_LU)
    assert ours.true_peak_dbtp == pytest.approx(theirs.true_peak_dbtp, abs=TRUE_PEAK_TOLERANCE_DB)


def test_the_public_shape_is_designs() -> None:
    # Given a measured track
    rate = 44_100
    analysis = analyze_track(Track(material("bass_heavy", 8.0, rate), rate))
    # When it is made public
    public = analysis.to_public()
    # Then it has exactly DESIGN.md's fields, numbers rounded to 0.01, one band level
    # per centre, at least 16 of them, and it is valid JSON
    assert list(public) == [
        "lufs",
        "loudness_range_lu",
        "true_peak_dbtp",
        "sample_peak_dbfs",
        "bands_db",
    ]
    assert isinstance(public["bands_db"], list)
    assert len(public["bands_db"]) == len(BAND_CENTRES_HZ) >= 16
    for value in [public[key] for key in list(public)[:4]] + public["bands_db"]:
        assert isinstance(value, float)
        assert value == round(value, 2)
    json.dumps(public, allow_nan=False)


def test_the_job_document_names_its_tracks_and_the_band_centres() -> None:
    # Given a target and a result measured, no reference (a preset job)
    rate = 48_000
    target = analyze_track(Track(material("speech", 6.0, rate), rate))
    result = analyze_track(Track(material("dense_loud", 6.0, rate), rate))
    # When the job's analysis is built
    document = analysis_document(target, result=result)
    # Then it is DESIGN.md's {target, result, band_centres_hz}, the reference left out
    assert set(document) == {"target", "result", "band_centres_hz"}
    assert document["band_centres_hz"] == list(BAND_CENTRES_HZ)
    assert document["result"] == result.to_public()
    json.dumps(document, allow_nan=False)


def test_silence_measures_as_nulls() -> None:
    # Given 5 s of digital silence
    silence = np.zeros((5 * 44_100, 2), dtype=np.float32)
    # When it is analysed
    public = analyze_track(Track(silence, 44_100)).to_public()
    # Then every value is null (JSON has no -inf), and the document is valid JSON
    assert public == {
        "lufs": None,
        "loudness_range_lu": None,
        "true_peak_dbtp": None,
        "sample_peak_dbfs": None,
        "bands_db": [None] * len(BAND_CENTRES_HZ),
    }
    assert "null" in json.dumps(public, allow_nan=False)


def test_a_track_under_the_gates_keeps_its_peaks_and_bands() -> None:
    # Given a 1-kHz sine at -90 dBFS (far under the -70 LUFS gate), 2 s long
    samples = sine(2.0, 48_000, freq=1_000.0, amplitude=10 ** (-90 / 20))
    # When it is analysed
    analysis = analyze_track(Track(samples, 48_000))
    # Then it has no loudness and no range, but its peaks and its band are measured
    assert analysis.lufs is None
    assert analysis.loudness_range_lu is None
    assert analysis.sample_peak_dbfs == pytest.approx(-90.0, abs=0.01)
    assert analysis.true_peak_dbtp == pytest.approx(-90.0, abs=0.05)
    assert analysis.bands_db[15] == pytest.approx(-90.0, abs=0.1)


def test_samples_that_are_not_numbers_measure_as_nulls() -> None:
    # Given a track with a NaN in it (the pipeline refuses those; the meter must not
    # put NaN into JSON if one slips through)
    samples = material("speech", 5.0, 44_100)
    samples[1000, 0] = np.nan
    # When it is analysed
    public = analyze_track(Track(samples, 44_100)).to_public()
    # Then nothing is measured, and the document is still valid JSON
    assert public["lufs"] is None
    assert public["true_peak_dbtp"] is None
    json.dumps(public, allow_nan=False)


def _cut(samples: npt.NDArray[np.float32], block: int | None) -> Iterator[npt.NDArray[np.float32]]:
    """``samples`` in blocks of ``block`` frames, or of 1 to 20000 at random (None)."""
    sizes = np.random.default_rng(3).integers(1, 20_000, size=samples.shape[0])
    start = 0
    for size in sizes:
        if start >= samples.shape[0]:
            return
        stop = start + (int(size) if block is None else block)
        yield samples[start:stop]
        start = stop


@pytest.mark.parametrize("block", [None, 777, 4_410, 1 << 17])
def test_blocks_of_any_size_give_the_tracks_analysis(block: int | None) -> None:
    # Given a track fed as blocks of any size (e.g. as the result is being written)
    rate = 44_100
    samples = material("loud_and_quiet", 15.0, rate)
    whole = analyze_track(Track(samples, rate), block_frames=samples.shape[0])
    # When it is analysed block by block
    analysis = analyze_blocks(_cut(samples, block), sample_rate=rate, channels=2)
    # Then it reads as the track in one piece (to float32 rounding)
    _assert_close(analysis, whole)


def _assert_close(ours: TrackAnalysis, theirs: TrackAnalysis) -> None:
    for key, value in ours.to_public().items():
        expected = theirs.to_public()[key]
        if isinstance(value, list):
            assert isinstance(expected, list)
            np.testing.assert_allclose(
                np.array(value, dtype=float), np.array(expected, dtype=float), atol=0.011
            )
        else:
            assert value == pytest.approx(expected, abs=0.011), key


def test_the_sample_peak_is_the_largest_sample() -> None:
    # Given a track whose largest sample is known exactly
    samples = material("dense_loud", 4.0, 48_000) * 0.5
    samples[12_345, 1] = -0.75
    # When it is analysed
    analysis = analyze_track(Track(samples, 48_000))
    # Then its sample peak is that sample, in dBFS
    assert analysis.sample_peak_dbfs == pytest.approx(20 * math.log10(0.75), abs=1e-6)


def test_blocks_of_the_wrong_shape_are_refused() -> None:
    # Given an analyser for stereo
    analyzer = TrackAnalyzer(44_100, 2)
    # When a mono block or a flat array is pushed
    # Then it says what it expected
    with pytest.raises(ValueError, match=r"\(frames, 2\)"):
        analyzer.push(np.zeros((100, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(frames, 2\)"):
        analyzer.push(np.zeros(100, dtype=np.float32))


def _noise_blocks(seconds: float, rate: int, block: int) -> Iterator[npt.NDArray[np.float32]]:
    rng = np.random.default_rng(0)
    for _ in range(round(seconds * rate) // block):
        yield (rng.standard_normal((block, 2)) * 0.1).astype(np.float32)


def _peak_traced_bytes(seconds: float) -> int:
    # A whole analysis first: caches (filters, windows, band weights) are not growth.
    analyze_blocks(_noise_blocks(3.0, 44_100, 1 << 16), sample_rate=44_100, channels=2)
    analyzer = TrackAnalyzer(44_100, 2)
    blocks = _noise_blocks(seconds, 44_100, 1 << 16)
    tracemalloc.start()
    try:
        for block in blocks:
            analyzer.push(block)
        analyzer.finish()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_track() -> None:
    # Given streams of 10 s and of 50 s, pushed in blocks
    # When each is analysed
    short, long = _peak_traced_bytes(10.0), _peak_traced_bytes(50.0)
    # Then the longer one needs hardly more: the analyser keeps ten short-term values
    # a second, about 1 KB a second with the gating's temporaries (measured: 37 KB for
    # the 40 s more), not samples (14 MB) nor a true peak per 64 samples (150 KB)
    assert long < short + 80_000, (short, long)


def test_true_peaks_taken_as_they_come_are_those_of_the_whole_stream() -> None:
    # Given a stream whose peaks are taken after every block, and the same stream
    # whose peaks are all left to the end
    samples = material("dense_loud", 3.0, 44_100)
    taking, keeping = TruePeakStream(2), TruePeakStream(2)
    taken = []
    for start in range(0, samples.shape[0], 5_000):
        taking.push(samples[start : start + 5_000])
        keeping.push(samples[start : start + 5_000])
        taken.append(taking.take())
    taken.append(taking.finish())
    # Then together they are the same peaks, one per group of the stream
    np.testing.assert_array_equal(np.concatenate(taken), keeping.finish())
    assert sum(part.shape[0] for part in taken) == group_true_peaks(samples).shape[0]
