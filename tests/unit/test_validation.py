"""What makes a track worth mastering, and how limits are said."""

from __future__ import annotations

import numpy as np
import pytest

from mastering.errors import AudioTooShort, SilentAudio
from mastering.track import Track
from mastering.validation import format_duration, validate_for_mastering
from tests.audio_factory import silence, sine, tone_mix

RATE = 44_100


def test_a_tracks_peak_is_its_largest_sample_across_blocks() -> None:
    # Given a long track whose loudest sample sits deep in the second half
    samples = sine(30.0, RATE, amplitude=0.25)
    samples[-12_345, 1] = -0.75
    # Then its peak is found wherever it is
    assert Track(samples, RATE).peak() == pytest.approx(0.75)
    assert Track(np.zeros((0, 2), np.float32), RATE).peak() == 0.0


@pytest.mark.parametrize(("bad", "peak"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
def test_a_track_with_nan_or_infinity_has_that_peak(bad: float, peak: str) -> None:
    # Given a long track with one NaN or infinite sample deep in its second channel
    samples = sine(30.0, RATE, amplitude=0.25)
    samples[-12_345, 1] = bad
    # Then its peak says so (NaN, or +infinity whatever the sign)
    assert repr(Track(samples, RATE).peak()) == peak


def test_nan_or_infinity_anywhere_makes_a_track_not_finite() -> None:
    samples = tone_mix(20.0, RATE)
    assert Track(samples, RATE).is_finite()
    samples[-1, 0] = np.inf
    assert not Track(samples, RATE).is_finite()


@pytest.mark.parametrize(
    ("peak_dbfs", "silent"),
    [(-100.0, True), (-85.0, True), (-75.0, False), (-20.0, False)],
)
def test_silence_is_a_peak_below_minus_80_dbfs(peak_dbfs: float, silent: bool) -> None:
    # Given noise-like music peaking at this level
    track = Track(tone_mix(1.5, RATE, 2, peak_dbfs=peak_dbfs), RATE)
    # Then it is refused as silent only below -80 dBFS
    if silent:
        with pytest.raises(SilentAudio, match="target is silent"):
            validate_for_mastering(track, role="target", min_duration_s=1.0)
    else:
        validate_for_mastering(track, role="target", min_duration_s=1.0)


def test_digital_silence_is_silent() -> None:
    with pytest.raises(SilentAudio, match="reference"):
        validate_for_mastering(
            Track(silence(2.0, RATE), RATE), role="reference", min_duration_s=1.0
        )


def test_too_short_says_how_long_it_is_and_must_be() -> None:
    with pytest.raises(AudioTooShort, match=r"0\.50 seconds long; it must be at least 1 second"):
        validate_for_mastering(Track(tone_mix(0.5, RATE), RATE), role="target", min_duration_s=1.0)


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
