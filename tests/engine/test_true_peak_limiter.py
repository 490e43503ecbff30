"""The true-peak limiter: peaks held under the ceiling, a gain that moves smoothly, and
masters that land at the loudness asked for."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.signals import song
from mastering.engine import master as engine_master
from mastering.engine.analysis import analyze
from mastering.engine.master import (
    MasterOptions,
    exact_peaks_from,
    limiter_stats,
    master,
    plan_on_exact_peaks,
)
from mastering.engine.true_peak import METER_TOLERANCE_DB, group_true_peaks, to_db, true_peak
from mastering.engine.true_peak_limiter import (
    SAFETY_MARGIN_DB,
    ceiling_stats,
    gain_curve,
    limit_in_place,
    limiting_threshold_db,
    plan_for_ceiling,
    plan_for_loudness,
    to_db_array,
)
from mastering.track import Track
from tests.oracles import ffmpeg_meter, pyloudnorm_lufs, reference_true_peak

RATE = 44_100


def _burst(level_db: float, *, start_s: float = 0.5, length_s: float = 0.3) -> np.ndarray:
    """1 kHz at -30 dBFS with a burst at ``level_db`` peak in the middle, stereo."""
    t = np.arange(round(2.0 * RATE)) / RATE
    level = np.where((t >= start_s) & (t < start_s + length_s), level_db, -30.0)
    tone = 10.0 ** (level / 20.0) * np.sin(2 * np.pi * 1_000.0 * t)
    return np.stack([tone, tone], axis=1).astype(np.float32)


def _gain_db(samples: np.ndarray) -> np.ndarray:
    stats = ceiling_stats(samples, RATE)
    plan = plan_for_ceiling(stats, -1.0)
    curve = gain_curve(plan.knots, 0, samples.shape[0], plan.group)
    return 20.0 * np.log10(curve.astype(np.float64))


def test_a_sudden_peak_is_caught_by_looking_ahead() -> None:
    # Given a burst 7 dB over a -1 dBTP ceiling, right after a quiet passage
    samples = _burst(6.0)
    # When it is limited
    limit_in_place(samples, RATE, -1.0)
    # Then even its first cycle stays under the ceiling (the gain was down before it)
    burst = samples[round(0.5 * RATE) : round(0.5 * RATE) + 441]
    assert reference_true_peak(burst) <= -1.0 - SAFETY_MARGIN_DB + 0.02
    assert reference_true_peak(samples) <= -1.0 - SAFETY_MARGIN_DB + 0.02


def test_the_gain_moves_smoothly_without_clicks() -> None:
    # Given a burst that needs 10 dB of reduction
    gain = _gain_db(_burst(9.0))
    # Then the gain falls over milliseconds, not in a step: no sample-to-sample jump
    # bigger than a fraction of a dB (a step would click)
    assert gain.min() == pytest.approx(-10.0 - SAFETY_MARGIN_DB, abs=0.3)
    assert np.max(np.abs(np.diff(gain))) < 0.5
    falling = np.flatnonzero(gain < -0.05)
    attack_ms = (np.argmax(gain <= gain.min() + 0.05) - falling[0]) / RATE * 1e3
    assert 1.0 <= attack_ms <= 5.0


def test_a_steady_tone_is_turned_down_evenly_not_pumped() -> None:
    # Given a long, steady tone 6 dB over the ceiling
    samples = _burst(5.0, start_s=0.2, length_s=1.6)
    # When it is limited
    limit_in_place(samples, RATE, -1.0)
    # Then, once the gain is down, every cycle peaks at the same level: the gain holds
    # still (no modulation at the tone's period, no pumping)
    cycles = samples[round(0.3 * RATE) : round(1.7 * RATE), 0].reshape(-1, 441)
    peaks_db = 20.0 * np.log10(np.abs(cycles).max(axis=1))
    assert peaks_db.max() - peaks_db.min() < 0.02


def test_the_gain_recovers_after_a_peak() -> None:
    # Given a short burst that needs 10 dB of reduction
    gain = _gain_db(_burst(9.0, length_s=0.1))
    # Then a quarter of a second after it the reduction has mostly gone
    after = gain[round(0.85 * RATE)]
    assert -1.0 < after < 0.0
    assert gain[-1] > -0.01


def _profile(rate: int = RATE):  # type: ignore[no-untyped-def]
    return analyze(Track(song("electronic", 22, rate, 10.0), rate))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    input_gain_db=st.floats(-24.0, 12.0),
    ceiling=st.floats(-9.0, 0.0),
    loudness=st.floats(-30.0, -5.0),
    style=st.sampled_from(["rock", "acoustic", "electronic"]),
)
def test_the_ceiling_holds_for_any_level_ceiling_and_loudness(
    tmp_path: Path, input_gain_db: float, ceiling: float, loudness: float, style: str
) -> None:
    # Given a track at any level, and any ceiling and loudness a client may ask
    target = song(style, 7, RATE, 5.0) * np.float32(10.0 ** (input_gain_db / 20.0))
    options = MasterOptions(loudness_lufs=loudness, ceiling_dbtp=ceiling)
    # When it is mastered
    result = master(Track(target, RATE), _profile(), options)
    # Then no meter reads it over the ceiling: not a near-continuous interpolation...
    assert reference_true_peak(result.samples) <= ceiling - METER_TOLERANCE_DB + 0.03
    # ...nor ffmpeg's, on the file
    path = tmp_path / f"{input_gain_db:.3f}-{ceiling:.3f}-{loudness:.3f}.wav"
    sf.write(path, result.samples, RATE, subtype="FLOAT")
    reading = ffmpeg_meter(path)
    assert reading.true_peak_dbtp <= ceiling
    # And it lands at the loudness asked, unless that would have squashed it
    measured = pyloudnorm_lufs(result.samples, RATE)
    if result.loudness_reached:
        assert measured == pytest.approx(loudness, abs=0.5)
        assert reading.lufs == pytest.approx(loudness, abs=0.5)
    else:
        # Given up only going louder, and not far off what limiting allows
        assert measured < loudness
        assert result.limiter_reduction_db > 0.0
    assert result.result_lufs == pytest.approx(measured, abs=0.05)
    assert to_db(result.true_peak) == pytest.approx(to_db(true_peak(result.samples)), abs=1e-6)


def test_a_loudness_beyond_reach_is_given_up_short_of_squashing() -> None:
    # Given a dynamic piece and a loudness only brutal limiting could reach
    target = song("acoustic", 8, RATE, 8.0)
    result = master(
        Track(target, RATE), _profile(), MasterOptions(loudness_lufs=-5.0, ceiling_dbtp=-1.0)
    )
    # Then it stops where limiting would start to wreck it, and says so
    assert not result.loudness_reached
    measured = pyloudnorm_lufs(result.samples, RATE)
    assert measured < -5.5
    assert result.limiter_reduction_db <= 12.0 + 0.1
    assert reference_true_peak(result.samples) <= -1.0 - METER_TOLERANCE_DB + 0.03
    assert math.isfinite(measured)


@pytest.mark.parametrize(
    ("style", "loudness"), [("rock", -14.0), ("electronic", -9.0), ("acoustic", -6.0)]
)
def test_the_plan_from_peak_bounds_is_the_plan_from_every_exact_peak(
    style: str, loudness: float
) -> None:
    # Given an EQ'd track's limiter statistics, with its true peaks as bounds
    rate = RATE
    pair_source = song(style, 9, rate, 8.0)
    mid_side = np.stack(
        [(pair_source[:, 0] + pair_source[:, 1]) / 2, (pair_source[:, 0] - pair_source[:, 1]) / 2],
        axis=1,
    ).astype(np.float32)
    bounded = limiter_stats(mid_side, rate, 1 << 17)
    left_right = np.stack([mid_side[:, 0] + mid_side[:, 1], mid_side[:, 0] - mid_side[:, 1]], 1)
    exact = to_db_array(group_true_peaks(left_right, group=bounded.group))
    everywhere = dataclasses.replace(bounded, peaks_db=exact)
    # When only the peaks the limiter may act on are measured exactly
    threshold = limiting_threshold_db(bounded, loudness, -1.0)
    measured = exact_peaks_from(bounded, mid_side, threshold)
    # Then every bound is at or above its peak, the peaks that matter are exact...
    assert np.all(bounded.peaks_db >= exact - 1e-4)
    matters = exact >= threshold
    np.testing.assert_allclose(measured.peaks_db[matters], exact[matters], atol=1e-5)
    assert np.count_nonzero(measured.peaks_db != bounded.peaks_db) < exact.shape[0]
    # ...and the limiter's plan is the one every exact peak gives
    planned = plan_for_loudness(measured, loudness, -1.0)
    reference = plan_for_loudness(everywhere, loudness, -1.0)
    assert planned.gain_db == pytest.approx(reference.gain_db, abs=1e-9)
    np.testing.assert_allclose(planned.knots, reference.knots, atol=1e-6)


@pytest.mark.parametrize("rate", [44_100, 48_000, 96_000])
@pytest.mark.parametrize("loudness", [-22.0, -12.0, -7.0])
def test_the_result_true_peak_is_the_meters_reading(
    rate: int, loudness: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a master limited hardly, moderately or hard, at each rate (its rows measured
    # a few at a time, so that the bounds, not the first batch, decide which)
    monkeypatch.setattr(engine_master, "_RESULT_ROWS_AT_ONCE", 4)
    result = master(
        Track(song("rock", 11, rate, 6.0), rate),
        _profile(rate),
        MasterOptions(loudness_lufs=loudness, ceiling_dbtp=-1.0),
    )
    # Then the true peak the engine reports, found from the rows the limiter's bounds
    # point at, is what the meter reads interpolating every row
    assert result.true_peak == pytest.approx(true_peak(result.samples), rel=1e-6)
    assert result.analysis.true_peak_dbtp == pytest.approx(
        to_db(true_peak(result.samples)), abs=1e-5
    )


@pytest.mark.parametrize(
    ("style", "loudness"), [("rock", -14.0), ("electronic", -9.0), ("acoustic", -6.0)]
)
def test_the_plan_measures_first_the_peaks_near_the_gain_alone(style: str, loudness: float) -> None:
    # Given an EQ'd track's limiter statistics, with its true peaks as bounds
    source = song(style, 9, RATE, 8.0)
    mid_side = np.stack(
        [(source[:, 0] + source[:, 1]) / 2, (source[:, 0] - source[:, 1]) / 2], axis=1
    ).astype(np.float32)
    bounded = limiter_stats(mid_side, RATE, 1 << 17)
    left_right = np.stack([mid_side[:, 0] + mid_side[:, 1], mid_side[:, 0] - mid_side[:, 1]], 1)
    exact = to_db_array(group_true_peaks(left_right, group=bounded.group))
    everywhere = plan_for_loudness(dataclasses.replace(bounded, peaks_db=exact), loudness, -1.0)
    # When the plan is made measuring the peaks near the gain alone first
    measured, planned = plan_on_exact_peaks(bounded, mid_side, loudness, -1.0)
    # Then it lands where the plan on every exact peak lands, or gives up as it does...
    assert planned.reached == everywhere.reached
    assert planned.gain_db == pytest.approx(everywhere.gain_db, abs=0.02)
    # ...and every peak it limits at its gain was measured exactly
    limited = measured.peaks_db + planned.gain_db > -1.0 - SAFETY_MARGIN_DB
    np.testing.assert_allclose(measured.peaks_db[limited], exact[limited], atol=1e-5)
