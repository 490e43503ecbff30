"""The band edge matchering's resampler puts on tracks not at 44.1 kHz.

matchering resamples every input to 44.1 kHz with ``resampy.resample(...,
filter="kaiser_best")``: a Kaiser-windowed sinc (50 zero crossings, beta ~12.98,
roll-off at 0.9173 of the lower Nyquist, so about 20.2 kHz for a 48 kHz track) that
is flat below ~19.5 kHz and removes everything from ~21 kHz up. That band edge is
part of matchering's sound at those rates: it is in the target spectrum matchering
measures (so its matching EQ rises there) and in its master.

This engine never resamples, but applies the same edge where matchering's would be,
from the filter's definition (numpy only; resampy is not imported at run time): the
analysis of a track at another rate measures it through that filter at the track's
own rate (``band_limit_taps``: resampy's kernel evaluated on the track's sample grid,
so the spectra show the same edge and the same boxcar-FFT leakage as a resampled
track's), and the matching EQ at that rate has the filter's magnitude response
(``resampler_response``) built in.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

from mastering.engine.params import INTERNAL_RATE

FloatArray = npt.NDArray[np.float64]

# resampy 0.4's "kaiser_best" (resampy/data/kaiser_best.npz), rebuilt from its recipe
# ``sinc_window(num_zeros=50, precision=13, window=kaiser(beta), rolloff)``; the test
# compares against the stored table.
ROLLOFF = 0.9173473712608761
KAISER_BETA = 12.984585247037936
ZERO_CROSSINGS = 50
# Points of the (continuous) filter per zero crossing used for its Fourier integral:
# its spectrum ends at ROLLOFF / 2 cycles per sample, far below 8 (the aliasing point).
_POINTS_PER_CROSSING = 16


@cache
def _half_window() -> tuple[FloatArray, float]:
    """(h at u = 0, 1/16, ... 50 lower-rate samples, spacing), as resampy's table."""
    count = ZERO_CROSSINGS * _POINTS_PER_CROSSING
    u = np.linspace(0.0, ZERO_CROSSINGS, count + 1)
    taper = np.kaiser(2 * count + 1, KAISER_BETA)[count:]
    values: FloatArray = ROLLOFF * np.sinc(ROLLOFF * u) * taper
    return values, 1.0 / _POINTS_PER_CROSSING


def _kernel(u: FloatArray) -> FloatArray:
    """The continuous filter at ``u`` lower-rate samples: rolloff-scaled sinc times the
    Kaiser taper over +-50 zero crossings (resampy's table samples exactly this)."""
    inside = np.abs(u) <= ZERO_CROSSINGS
    ratio = np.clip(u / ZERO_CROSSINGS, -1.0, 1.0)
    taper = np.i0(KAISER_BETA * np.sqrt(1.0 - ratio * ratio)) / np.i0(KAISER_BETA)
    values: FloatArray = np.where(inside, ROLLOFF * np.sinc(ROLLOFF * u) * taper, 0.0)
    return values


@cache
def band_limit_taps(rate: int) -> FloatArray:
    """Odd-length, zero-phase FIR at ``rate`` with resampy's band edge: the samples
    resampy's kernel weights a ``rate`` track with (``scale * h(scale * n)``,
    ``scale = min(1, 44100 / rate)``), so filtering with it gives, at the track's own
    rate, the band-limited signal resampy's output samples."""
    scale = min(1.0, INTERNAL_RATE / rate)
    half = int(ZERO_CROSSINGS / scale)
    taps: FloatArray = scale * _kernel(scale * np.arange(-half, half + 1, dtype=np.float64))
    return taps


def resampler_response(frequencies_hz: npt.ArrayLike, rate: int) -> FloatArray:
    """|H(f)|: the gain matchering's resampling of a ``rate`` track to 44.1 kHz has at
    ``frequencies_hz`` (1 everywhere for a 44.1 kHz track, which is not resampled).

    resampy's filter runs at the lower of the two rates (a 48 kHz track: cut-off at
    0.9173 x 22 050 Hz; a 32 kHz one: 0.9173 x 16 000 Hz), and nothing is left above
    that rate's Nyquist.
    """
    frequencies = np.asarray(frequencies_hz, dtype=np.float64)
    if rate == INTERNAL_RATE:
        return np.ones_like(frequencies)
    lower = float(min(rate, INTERNAL_RATE))
    values, spacing = _half_window()
    u = np.arange(values.shape[0]) * spacing
    cycles = frequencies.reshape(-1) / lower  # cycles per lower-rate sample
    # The symmetric filter's Fourier integral (trapezoid rule; its ends are ~0).
    phases = np.cos(2.0 * np.pi * cycles[:, None] * u[None, :])
    response = spacing * (values[0] + 2.0 * (phases[:, 1:] @ values[1:]))
    response = np.abs(response)
    response[cycles >= 0.5] = 0.0
    shaped: FloatArray = response.reshape(frequencies.shape)
    return shaped
