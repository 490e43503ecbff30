"""Loudness range (EBU Tech 3342): the standard's own test signals, its gates, and
ffmpeg's ``ebur128`` short-term meter window by window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mastering.engine.loudness_range import LoudnessRangeMeter, loudness_range
from tests.audio_factory import material, sine, write_wav
from tests.oracles import ffmpeg_short_term

RATE = 48_000


def _meter(samples: np.ndarray, rate: int = RATE, block: int = 1 << 17) -> LoudnessRangeMeter:
    meter = LoudnessRangeMeter(rate, channels=samples.shape[1])
    for start in range(0, samples.shape[0], block):
        meter.push(samples[start : start + block])
    return meter


def _sine_sections(*levels_dbfs: float, seconds: float = 20.0) -> np.ndarray:
    """Tech 3342's test signals: a 1-kHz stereo sine, ``seconds`` at each level."""
    return np.concatenate(
        [sine(seconds, RATE, freq=1_000.0, amplitude=10 ** (level / 20)) for level in levels_dbfs]
    )


def _noise(seconds: float, gain_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((round(seconds * RATE), 2)) * 0.1 * 10 ** (gain_db / 20)
    return noise.astype(np.float32)


@pytest.mark.parametrize(
    ("levels", "expected_lu"),
    [
        ((-20.0, -30.0), 10.0),
        ((-20.0, -15.0), 5.0),
        ((-40.0, -20.0), 20.0),
        ((-50.0, -35.0, -20.0, -35.0, -50.0), 15.0),
    ],
)
def test_tech_3342_test_signals_read_their_range(
    levels: tuple[float, ...], expected_lu: float
) -> None:
    # Given Tech 3342's minimum-requirement signals (cases 1-4: 20-s sections of a
    # 1-kHz sine; the standard allows +-1 LU)
    samples = _sine_sections(*levels)
    # When the meter reads them
    lra = _meter(samples).loudness_range()
    # Then it reads the range the standard gives (case 4: the -50 sections fall
    # under the relative gate)
    assert lra == pytest.approx(expected_lu, abs=0.05)


def test_a_section_more_than_20_lu_under_the_rest_is_gated_out() -> None:
    # Given 40 s of noise followed by 20 s at -25 dB, and the same followed by -15 dB
    far = np.concatenate([_noise(40.0, 0.0), _noise(20.0, -25.0, seed=1)])
    near = np.concatenate([_noise(40.0, 0.0), _noise(20.0, -15.0, seed=1)])
    # When both are metered
    # Then the far-quieter section is under the relative gate (-20 LU) and the range
    # is the loud section's own; the nearer one counts in full
    assert _meter(far).loudness_range() == pytest.approx(0.0, abs=0.5)
    assert _meter(near).loudness_range() == pytest.approx(15.0, abs=0.1)


def test_a_track_under_the_absolute_gate_has_no_range() -> None:
    # Given noise around -80 LUFS (under the -70 LUFS gate) and around -60 LUFS
    # When they are metered
    # Then the first has no loudness range at all, the second a steady one
    assert _meter(_noise(10.0, -60.0)).loudness_range() is None
    assert _meter(_noise(10.0, -40.0)).loudness_range() == pytest.approx(0.0, abs=0.2)


def test_silence_and_tracks_shorter_than_a_window_have_no_range() -> None:
    # Given digital silence, 2.9 s of noise and 3 s of noise
    silent = np.zeros((10 * RATE, 2), dtype=np.float32)
    # When they are metered
    # Then only a track with a whole 3-s window has a range
    assert _meter(silent).loudness_range() is None
    assert _meter(_noise(2.9, 0.0)).loudness_range() is None
    assert _meter(_noise(3.0, 0.0)).loudness_range() == 0.0


def test_percentiles_are_tech_3342s() -> None:
    # Given 21 short-term values one LU apart, -30 to -10 LUFS (all above the gate)
    loudness = np.arange(-30.0, -9.0)
    power = 10 ** ((loudness + 0.691) / 10)
    # When their range is taken
    # Then it runs from element round(20 * 0.10) = 2 to round(20 * 0.95) = 19 of
    # the sorted values: -28 to -11 LUFS
    assert loudness_range(power) == pytest.approx(17.0, abs=1e-9)


@pytest.mark.parametrize("block", [1_000, 4_411, 1 << 17, 10**9])
def test_the_range_does_not_depend_on_how_the_stream_is_cut(block: int) -> None:
    # Given a track of loud and quiet sections, cut into blocks of any size
    samples = material("loud_and_quiet", 30.0, RATE)
    # When it is metered block by block
    meter = _meter(samples, block=block)
    # Then the short-term values and the range are those of the track in one piece
    # (to float32 rounding in the filter: 1e-5 of a power is 0.00004 LU)
    whole = _meter(samples, block=samples.shape[0])
    np.testing.assert_allclose(meter.short_term_power(), whole.short_term_power(), rtol=1e-5)
    assert meter.loudness_range() == pytest.approx(whole.loudness_range(), abs=1e-4)


def test_the_meter_keeps_ten_values_per_second_not_samples() -> None:
    # Given 60 s of audio
    meter = _meter(_noise(60.0, 0.0))
    # When it has been metered
    # Then what the meter holds is one short-term value per 100 ms from 3 s on
    assert meter.short_term_power().shape == (571,)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [44_100, 48_000, 96_000])
@pytest.mark.parametrize("kind", ["loud_and_quiet", "speech"])
def test_short_term_loudness_is_ffmpegs_window_by_window(
    kind: str, rate: int, tmp_path: Path
) -> None:
    # Given a track with a wide range, written as float WAV for ffmpeg
    samples = material(kind, 15.0, rate)
    path = write_wav(tmp_path / f"{kind}.wav", samples, rate, "FLOAT")
    # When both meters read its short-term loudness
    ours = _meter(samples, rate).short_term_loudness()
    theirs = np.array(ffmpeg_short_term(path))
    # Then they read the same windows (3 s, every 100 ms) to within 0.1 LU (the
    # K-weighting's coefficients differ slightly: pyloudnorm's against ffmpeg's)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=0.1)
