"""matchering's resampling filter, rebuilt without resampy, is resampy's."""

from __future__ import annotations

import numpy as np
import pytest

from mastering.engine.resampler import (
    ROLLOFF,
    ZERO_CROSSINGS,
    Resampler,
    _kernel,
    band_limit_taps,
    internal_length,
    resampler_response,
)


def test_kernel_is_resampys_kaiser_best_table() -> None:
    filters = pytest.importorskip("resampy.filters")
    table, precision, rolloff = filters.get_filter("kaiser_best")
    assert float(rolloff) == ROLLOFF
    u = np.linspace(0.0, ZERO_CROSSINGS, table.shape[0])
    assert precision == 2**13
    np.testing.assert_allclose(_kernel(u), table, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rate", [32_000, 48_000, 96_000])
def test_response_is_what_resampy_does_to_sines(rate: int) -> None:
    resampy = pytest.importorskip("resampy")
    lower = min(rate, 44_100)
    t = np.arange(rate) / rate
    for fraction in (0.3, 0.85, 0.9, 0.9173, 0.93, 0.95):
        frequency = fraction * lower / 2
        # A one-second sine through resampy; its amplitude away from the ends
        out = resampy.resample(np.sin(2 * np.pi * frequency * t), rate, 44_100, axis=0)
        middle = out[8_000:-8_000]
        amplitude = np.sqrt(2 * np.mean(middle**2))
        expected = resampler_response(np.array([frequency]), rate)[0]
        assert amplitude == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("rate", [32_000, 48_000, 96_000])
def test_band_limit_taps_have_the_response(rate: int) -> None:
    # The taps, as a filter at ``rate``, have the resampler's magnitude response
    taps = band_limit_taps(rate)
    assert taps.shape[0] % 2 == 1
    np.testing.assert_allclose(taps, taps[::-1])
    frequencies = np.linspace(0, rate / 2, 2001)
    centre = taps.shape[0] // 2
    phases = np.exp(-2j * np.pi * np.outer(frequencies / rate, np.arange(taps.shape[0]) - centre))
    ours = np.abs(phases @ taps)
    expected = resampler_response(frequencies, rate)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_a_44k_track_is_not_filtered() -> None:
    assert np.array_equal(resampler_response(np.array([0.0, 21_000.0]), 44_100), [1.0, 1.0])


@pytest.mark.parametrize("rate", [22_050, 32_000, 48_000, 96_000, 192_000])
def test_resampler_equals_resampy_block_by_block(rate: int) -> None:
    resampy = pytest.importorskip("resampy")
    # Given three seconds of noise, resampled by resampy in one go
    signal = (np.random.default_rng(rate).standard_normal(3 * rate) * 0.3).astype(np.float32)
    expected = resampy.resample(signal.astype(np.float64), rate, 44_100, filter="kaiser_best")
    # When the Resampler computes the same outputs in uneven ranges, each from only
    # the samples within its reach
    resampler = Resampler(rate)
    frames = internal_length(signal.shape[0], rate)
    pieces = []
    for first in range(0, frames, 40_001):
        stop = min(first + 40_001, frames)
        lo = max(int(first * rate / 44_100) - resampler.reach, 0)
        hi = min(int(stop * rate / 44_100) + resampler.reach + 1, signal.shape[0])
        pieces.append(resampler.outputs(signal[lo:hi], first, stop, offset=lo))
    # Then it is resampy's output to float32 precision
    assert frames == expected.shape[0]
    np.testing.assert_allclose(np.concatenate(pieces), expected, rtol=0, atol=3e-6)


def test_resampler_refuses_rates_without_a_small_period() -> None:
    assert not Resampler.available(44_056)
    with pytest.raises(ValueError, match="no resampling matrix"):
        Resampler(44_056)
