"""Previews: the loudest window, the fades, and the A/B pair brought to one loudness."""

from __future__ import annotations

import numpy as np
import pytest

from mastering.engine.preview import (
    PREVIEW_S,
    fade_in_place,
    loudest_window,
    match_loudness_in_place,
)
from tests.audio_factory import material
from tests.oracles import pyloudnorm_lufs, reference_true_peak

RATE = 44_100


def _quiet_then_loud(rate: int, loud_from_s: float, loud_to_s: float, total_s: float) -> np.ndarray:
    samples = material("quiet_dynamic", total_s, rate) * np.float32(0.1)
    loud = slice(round(loud_from_s * rate), round(loud_to_s * rate))
    samples[loud] = material("dense_loud", loud_to_s - loud_from_s, rate, seed=3)
    return samples


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_the_window_is_the_loudest_thirty_seconds(rate: int) -> None:
    # Given a 2-minute track, quiet but for a loud 30-s stretch from 70 s
    samples = _quiet_then_loud(rate, 70.0, 100.0, 120.0)
    # When its preview window is chosen
    window = loudest_window(samples, rate)
    # Then it is 30 s long and lands on the loud stretch (to a step)
    assert window.stop - window.start == round(PREVIEW_S * rate)
    assert abs(window.start / rate - 70.0) <= 0.2


def test_loudness_means_k_weighted_not_sample_peak() -> None:
    # Given a track whose highest sample peaks are in a sub-bass stretch and whose
    # loud midrange is elsewhere
    rate = RATE
    t = np.arange(round(90 * rate)) / rate
    samples = np.zeros((t.shape[0], 2), dtype=np.float32)
    bass = slice(0, round(30 * rate))
    samples[bass] = (0.9 * np.sin(2 * np.pi * 30 * t[bass]))[:, None]
    mids = slice(round(55 * rate), round(85 * rate))
    samples[mids] = (0.3 * np.sin(2 * np.pi * 2000 * t[mids]))[:, None]
    # When the window is chosen
    window = loudest_window(samples, rate)
    # Then it is the one a listener hears as loudest
    assert abs(window.start / rate - 55.0) <= 0.2


def test_a_track_shorter_than_the_preview_is_taken_whole() -> None:
    samples = material("dense_loud", 12.0, RATE)
    assert loudest_window(samples, RATE) == slice(0, samples.shape[0])


def test_fades_start_and_end_in_silence_and_leave_the_middle() -> None:
    # Given 30 s of loud material
    samples = material("dense_loud", 30.0, RATE)
    middle = samples[10 * RATE : 20 * RATE].copy()
    # When faded
    fade_in_place(samples, RATE)
    # Then the first and last samples are silent, the ramps take one second, and
    # the middle is untouched
    assert np.max(np.abs(samples[:10])) < 1e-6
    assert np.max(np.abs(samples[-10:])) < 1e-4
    assert np.max(np.abs(samples[RATE // 2 - 100 : RATE // 2 + 100])) < np.max(np.abs(middle))
    np.testing.assert_array_equal(samples[10 * RATE : 20 * RATE], middle)


@pytest.mark.parametrize("channels", [1, 2])
def test_the_original_is_brought_to_the_masters_loudness_under_its_ceiling(
    channels: int,
) -> None:
    # Given a quiet dynamic excerpt and a loud master's loudness
    samples = material("quiet_dynamic", 30.0, RATE)[:, :channels].copy()
    before = pyloudnorm_lufs(samples, RATE)
    # When it is matched to -16 LUFS under a -1 dBTP ceiling
    gain_db = match_loudness_in_place(samples, RATE, -16.0, -1.0)
    # Then pyloudnorm reads it within half a LU of the aim (the limiter may take a
    # little), it was raised by what was missing, and its true peak is under -1 dBTP
    assert gain_db == pytest.approx(-16.0 - before, abs=0.05)
    assert pyloudnorm_lufs(samples, RATE) == pytest.approx(-16.0, abs=0.5)
    assert reference_true_peak(samples) <= -1.0


def test_silence_is_left_alone() -> None:
    samples = np.zeros((30 * RATE, 2), dtype=np.float32)
    assert match_loudness_in_place(samples, RATE, -14.0, -1.0) == 0.0
    assert not samples.any()
