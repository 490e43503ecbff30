"""The matching EQ: matchering's ``get_fir``, designed at the target's own rate.

matchering divides the reference's average spectrum by the target's, smooths the
ratio on a log-frequency grid (cubic interpolation, LOWESS, back to linear), and
turns it into a 4096-tap linear-phase FIR (Hann-windowed) at 44.1 kHz. Here the
smoothed curve, a function of frequency, is sampled on the FFT grid of the target's
rate instead: at 44.1 kHz the taps are matchering's own; elsewhere the filter has the
same response and timing, times the band edge of the resampling matchering would
have done (``engine.resampler``).

scipy's ``interp1d`` and ``hann`` are replaced by numpy equivalents (``engine.spline``
and ``hann`` below): importing scipy.interpolate and scipy.signal would cost more than
a second of the process.
"""

from __future__ import annotations

import numpy as np

from mastering.engine.dsp import Float64Array
from mastering.engine.lowess import lowess
from mastering.engine.params import (
    FFT_SIZE,
    INTERNAL_RATE,
    LIN_LOG_OVERSAMPLING,
    LOWESS_DELTA,
    LOWESS_FRAC,
    MIN_VALUE,
)
from mastering.engine.resampler import resampler_response
from mastering.engine.spline import CubicSpline

_NYQUIST = INTERNAL_RATE * 0.5


def matching_ratio(reference: Float64Array, target: Float64Array) -> Float64Array:
    """Per-bin gain that turns the target's average spectrum into the reference's."""
    ratio: Float64Array = reference / np.maximum(MIN_VALUE, target)
    return ratio


def _linear_grid() -> Float64Array:
    grid: Float64Array = _NYQUIST * np.linspace(0, 1, FFT_SIZE // 2 + 1)
    return grid


def _log_grid() -> Float64Array:
    points = (FFT_SIZE // 2) * LIN_LOG_OVERSAMPLING + 1
    grid: Float64Array = _NYQUIST * np.logspace(np.log10(4 / FFT_SIZE), 0, points)
    return grid


def smoothed_curve(ratio: Float64Array) -> CubicSpline:
    """The ratio smoothed as matchering does, as a function of frequency in Hz."""
    log_grid = _log_grid()
    on_log_grid = CubicSpline(_linear_grid(), ratio)(log_grid)
    smoothed = lowess(
        on_log_grid, np.linspace(0, 1, on_log_grid.shape[0]), frac=LOWESS_FRAC, delta=LOWESS_DELTA
    )
    return CubicSpline(log_grid, smoothed)


def hann(length: int) -> Float64Array:
    """``scipy.signal.windows.hann(length)`` (symmetric), computed as scipy does."""
    if length <= 1:
        return np.ones(length)
    angle = np.linspace(-np.pi, np.pi, length)
    window: Float64Array = np.zeros(length)
    window += 0.5 * np.cos(0 * angle)
    window += 0.5 * np.cos(angle)
    return window


def fir_length(rate: int) -> int:
    """Taps at ``rate`` spanning matchering's 4096 taps at 44.1 kHz (even, like it)."""
    if rate == INTERNAL_RATE:
        return FFT_SIZE
    return 2 * round(FFT_SIZE / 2 * rate / INTERNAL_RATE)


def design_fir(ratio: Float64Array, rate: int, *, intensity: float = 1.0) -> Float64Array:
    """Linear-phase FIR at ``rate`` whose response is the smoothed ``ratio``, that curve
    taken ``intensity`` of the way in dB (0: flat, 1: matchering's full match)."""
    length = fir_length(rate)
    curve = smoothed_curve(ratio)
    if rate == INTERNAL_RATE:
        response = curve(_linear_grid())
    else:
        frequencies = rate * 0.5 * np.linspace(0, 1, length // 2 + 1)
        # matchering resamples such a target to 44.1 kHz first and EQs that, so its
        # master carries its resampler's band edge (~20.2 kHz at 48 kHz and up) and
        # nothing above the lower Nyquist: the EQ here has that edge built in.
        nyquist = min(_NYQUIST, rate * 0.5)
        response = curve(np.minimum(frequencies, nyquist))
        response *= resampler_response(frequencies, rate)
    # matchering: no DC, and the lowest bin (about 10.8 Hz) left unsmoothed.
    response[1] = ratio[1]
    if intensity != 1.0:
        # A share of the curve in dB is a power of it; the smoothed curve can dip to
        # ~0 where a spectrum is empty, so it is floored for the logarithm's sake.
        response = np.maximum(response, MIN_VALUE) ** intensity
    response[0] = 0.0
    if rate != INTERNAL_RATE:
        # An even-length FIR used with "same" delays the output by one sample; for
        # matchering that is one 44.1 kHz sample. Keep that timing at other rates with
        # a (band-limited, fractional) extra delay of rate / 44100 - 1 samples.
        delay = rate / INTERNAL_RATE - 1.0
        bins = np.arange(response.shape[0])
        response = response * np.exp(-2j * np.pi * bins * delay / length)
    fir = np.fft.ifftshift(np.fft.irfft(response, n=length))
    shaped: Float64Array = fir * hann(length)
    return shaped
