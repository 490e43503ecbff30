"""The true-peak meter reads what a near-continuous interpolation reads, block or not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, firwin, lfilter

from bench.signals import song
from mastering.engine.true_peak import (
    OVERSAMPLING,
    TAPS_PER_PHASE,
    TruePeakMeter,
    TruePeakStream,
    group_true_peaks,
    interpolation_filter,
    to_db,
    true_peak,
)
from mastering.engine.true_peak_limiter import limit_in_place
from tests.oracles import reference_true_peak

# What the meter may miss of a 32x interpolation (measured: at most 0.013 dB).
ACCURACY_DB = 0.03


def test_interpolation_filter_is_firwins_kaiser_lowpass() -> None:
    expected = (
        firwin(OVERSAMPLING * TAPS_PER_PHASE + 1, 1 / OVERSAMPLING, window=("kaiser", 6.0))
        * OVERSAMPLING
    )
    np.testing.assert_allclose(interpolation_filter(), expected, atol=1e-12)


def _bright_noise(rate: int, seconds: float) -> np.ndarray:
    noise = np.random.default_rng(rate).standard_normal((round(rate * seconds), 2))
    b, a = butter(2, 8_000 / (rate / 2), "high")
    return lfilter(b, a, noise, axis=0) * 0.2 + 0.1 * noise


def _clipped(style: str, rate: int) -> np.ndarray:
    x = song(style, 3, rate, 6.0).astype(np.float64)
    return np.clip(x / np.max(np.abs(x)) * 3.0, -0.9, 0.9)


def _limited(x: np.ndarray, rate: int) -> np.ndarray:
    # A limiter pushes every interpolated point of its meter to the ceiling: the peaks
    # between them are what a meter reading too coarsely misses.
    loud = (x / np.max(np.abs(x)) * 1.6).astype(np.float32)
    limit_in_place(loud, rate, -1.0, margin_db=0.0)
    return loud


@pytest.mark.parametrize("rate", [44_100, 48_000, 96_000])
@pytest.mark.parametrize("kind", ["clipped rock", "clipped acoustic", "limited noise", "limited"])
def test_true_peak_is_within_hundredths_of_a_continuous_reading(kind: str, rate: int) -> None:
    # Given hard-clipped music, limited bright noise or a limited mix
    if kind == "clipped rock":
        samples = _clipped("rock", rate)
    elif kind == "clipped acoustic":
        samples = _clipped("acoustic", rate)
    elif kind == "limited noise":
        samples = _limited(_bright_noise(rate, 4.0), rate)
    else:
        samples = _limited(song("electronic", 4, rate, 6.0), rate)
    # When the meter reads it
    ours = to_db(true_peak(samples.astype(np.float32)))
    # Then it agrees with a 32x interpolation
    assert ours == pytest.approx(reference_true_peak(samples), abs=ACCURACY_DB)


@pytest.mark.parametrize("frequency", [997.0, 15_000.0, 19_500.0, 21_000.0])
def test_a_sine_reads_its_amplitude_whatever_its_phase(frequency: float) -> None:
    # Given a sine whose peaks fall between samples (faded in and out: a sine that
    # starts abruptly rings past its amplitude, as any band-limited step does)
    rate = 44_100
    t = np.arange(rate) / rate
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    samples = (0.5 * fade * np.sin(2 * np.pi * frequency * t + 0.37))[:, None].astype(np.float32)
    # Then the meter reads its amplitude, not its largest sample
    assert to_db(true_peak(samples)) == pytest.approx(to_db(0.5), abs=0.02)


@pytest.mark.parametrize("frames", [1, 5, 63, 64, 65, 1_000, 131_072, 131_073, 300_001])
def test_streaming_in_any_blocks_reads_what_one_pass_reads(frames: int) -> None:
    # Given noise with its extremes at the very first and last samples
    rng = np.random.default_rng(frames)
    samples = (rng.standard_normal((frames, 2)) * 0.3).astype(np.float32)
    samples[0, 0], samples[-1, 1] = -0.95, 0.9
    whole = group_true_peaks(samples, group=32, block=1 << 20)
    # When it is pushed in blocks of awkward sizes
    stream = TruePeakStream(2, group=32)
    for start in range(0, frames, 7_777):
        stream.push(samples[start : start + 7_777])
    streamed = stream.finish()
    # Then every group's peak is the same (to float32 rounding: the matrix products
    # may sum in another order for another number of rows), one group per 32 frames
    assert streamed.shape == (-(-frames // 32),)
    np.testing.assert_allclose(streamed, whole, rtol=1e-6)
    assert float(whole.max()) >= 0.95


def _hard_cases() -> dict[str, np.ndarray]:
    """Material where the peak between samples is far from the samples, or where it
    hides in one short stretch of a quiet track."""
    rate = 44_100
    n = np.arange(rate)
    rng = np.random.default_rng(5)
    cases: dict[str, np.ndarray] = {
        "clipped rock": _clipped("rock", rate),
        "limited bright noise": _limited(_bright_noise(rate, 2.0), rate),
        "limited mix": _limited(song("electronic", 4, rate, 3.0), rate),
        "alternating samples": (np.where(n % 2 == 0, 0.9, -0.9) * (n % 1000 < 500))[:, None],
        "square wave": np.sign(np.sin(2 * np.pi * 1000 / rate * n))[:, None] * 0.9,
        "quiet, then one loud burst": np.concatenate(
            [rng.standard_normal((300_000, 2)) * 0.01, rng.standard_normal((1_000, 2)) * 0.5]
        ),
    }
    # Sines just under Nyquist, starting abruptly: they ring far above their samples.
    for cycles, phase in ((0.4999, 0.3), (0.4999, np.pi / 4), (0.45, 0.79), (0.25, 0.3)):
        cases[f"sine {cycles} fs"] = (0.5 * np.sin(2 * np.pi * cycles * n + phase))[:, None]
    return cases


@pytest.mark.parametrize("case", sorted(_hard_cases()))
def test_the_largest_peak_is_found_without_interpolating_every_row(case: str) -> None:
    # Given material whose true peak is hard to find
    samples = _hard_cases()[case].astype(np.float32)
    # When the peak-only meter reads it, in awkward blocks
    meter = TruePeakMeter(samples.shape[1])
    for start in range(0, samples.shape[0], 7_777):
        meter.push(samples[start : start + 7_777])
    # Then it finds the largest of the peaks the per-group meter finds in every row
    assert meter.finish() == pytest.approx(float(group_true_peaks(samples).max()), rel=1e-6)
    assert true_peak(samples) == pytest.approx(float(group_true_peaks(samples).max()), rel=1e-6)
