"""Loudness, peak and silence measurements agree with BS.1770 conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mastering.audio.measure import (
    format_duration,
    integrated_lufs,
    is_digital_silence,
    sample_peak_dbfs,
    true_peak_dbtp,
)
from tests.audio_factory import silence, sine, tone_mix

RATE = 48_000
HALF_SCALE_DB = 20 * math.log10(0.5)  # -6.02


def test_stereo_997_hz_sine_at_minus_20_dbfs_reads_minus_20_lufs() -> None:
    # Given a 997 Hz sine peaking at -20 dBFS in both channels. K-weighting is built so a
    # full-scale 1 kHz sine reads -3.01 LUFS in one channel; two equal channels add 3.01.
    tone = sine(3.0, RATE, freq=997.0, amplitude=10 ** (-20 / 20), channels=2)

    # When its integrated loudness is measured
    lufs = integrated_lufs(tone, RATE)

    # Then it reads -20 LUFS
    assert lufs == pytest.approx(-20.0, abs=0.1)


def test_six_db_more_gain_reads_six_lu_louder() -> None:
    # Given music and the same music 6 dB louder
    music = tone_mix(3.0, 44_100, 2, seed=5, peak_dbfs=-12.0)
    louder = music * np.float32(10 ** (6 / 20))

    # When both are measured
    quiet_lufs = integrated_lufs(music, 44_100)
    loud_lufs = integrated_lufs(louder, 44_100)

    # Then the difference is 6 LU
    assert quiet_lufs is not None
    assert loud_lufs is not None
    assert loud_lufs - quiet_lufs == pytest.approx(6.0, abs=0.05)


def test_mono_one_dimensional_input_is_measured() -> None:
    # Given a mono sine as a flat array, When measured, Then one channel's loudness comes back
    tone = sine(2.0, RATE, amplitude=10 ** (-20 / 20), channels=1)[:, 0]
    assert integrated_lufs(tone, RATE) == pytest.approx(-23.01, abs=0.1)


@pytest.mark.parametrize(
    "samples",
    [silence(2.0, RATE), sine(0.3, RATE)],
    ids=["silence", "shorter than one 400 ms block"],
)
def test_loudness_is_undefined_for_silence_or_too_little_audio(samples: np.ndarray) -> None:
    assert integrated_lufs(samples, RATE) is None


def test_true_peak_finds_the_crest_between_samples() -> None:
    # Given a half-scale sine at fs/4 phased 45 degrees: every sample misses the crest by 3 dB
    tone = sine(1.0, RATE, freq=RATE / 4, amplitude=0.5, channels=2, phase=math.pi / 4)

    # When its sample and true peaks are measured
    sample_peak = sample_peak_dbfs(tone)
    true_peak = true_peak_dbtp(tone, RATE)

    # Then the true peak sees the real crest the samples miss
    assert sample_peak == pytest.approx(HALF_SCALE_DB - 3.01, abs=0.01)
    assert true_peak > sample_peak + 2.5
    assert true_peak == pytest.approx(HALF_SCALE_DB, abs=0.5)


def test_true_peak_in_blocks_equals_one_pass() -> None:
    # Given 3 s of music, When its true peak is measured in 0.25 s blocks and in one block
    music = tone_mix(3.0, 44_100, 2, seed=6, peak_dbfs=-1.0)
    in_blocks = true_peak_dbtp(music, 44_100, block_frames=11_025)
    in_one = true_peak_dbtp(music, 44_100, block_frames=music.shape[0])

    # Then the block edges change nothing
    assert in_blocks == pytest.approx(in_one, abs=1e-4)
    assert in_one >= sample_peak_dbfs(music)


def test_true_peak_of_a_mono_flat_array() -> None:
    tone = sine(0.5, RATE, freq=RATE / 4, amplitude=0.5, channels=1, phase=math.pi / 4)[:, 0]
    assert true_peak_dbtp(tone, RATE) == pytest.approx(HALF_SCALE_DB, abs=0.5)


def test_silence_has_no_peak_and_is_digital_silence() -> None:
    # Given digital silence
    quiet = silence(1.0, RATE)

    # When measured, Then peaks are -inf and it counts as silence
    assert true_peak_dbtp(quiet, RATE) == -math.inf
    assert sample_peak_dbfs(quiet) == -math.inf
    assert sample_peak_dbfs(np.zeros((0, 2), np.float32)) == -math.inf
    assert is_digital_silence(quiet)


def test_sample_peak_of_half_scale_is_minus_6_dbfs() -> None:
    assert sample_peak_dbfs(sine(0.1, RATE, amplitude=0.5)) == pytest.approx(
        HALF_SCALE_DB, abs=0.01
    )


@pytest.mark.parametrize(
    ("peak_dbfs", "silent"),
    [(-100.0, True), (-85.0, True), (-75.0, False), (-20.0, False)],
)
def test_silence_threshold_is_minus_80_dbfs(peak_dbfs: float, silent: bool) -> None:
    # Given noise-like music peaking at this level, Then it is silence only below -80 dBFS
    assert is_digital_silence(tone_mix(0.5, 44_100, 2, peak_dbfs=peak_dbfs)) is silent


def test_silence_threshold_can_be_raised() -> None:
    assert is_digital_silence(tone_mix(0.5, peak_dbfs=-65.0), threshold_dbfs=-60.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (900.0, "15 minutes"),
        (60.0, "1 minute"),
        (90.0, "1 minute 30 seconds"),
        (1.0, "1 second"),
        (2.0, "2 seconds"),
        (0.5, "0.5 seconds"),
    ],
)
def test_limits_read_the_way_people_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
