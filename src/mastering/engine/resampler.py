"""The band edge matchering's resampler puts on tracks not at 44.1 kHz.

matchering resamples every input to 44.1 kHz with ``resampy.resample(...,
filter="kaiser_best")``: a Kaiser-windowed sinc (50 zero crossings, beta ~12.98,
roll-off at 0.9173 of the lower Nyquist, so about 20.2 kHz for a 48 kHz track) that
is flat below ~19.5 kHz and removes everything from ~21 kHz up. That band edge is
part of matchering's sound at those rates: it is in the target spectrum matchering
measures (so its matching EQ rises there) and in its master.

This engine never resamples what it masters (the output stays at the target's rate),
but reproduces both effects, from the filter's definition (numpy only; resampy is not
imported at run time):

* the analysis of a track at another rate sees it exactly as resampy's 44.1 kHz
  output (``Resampler``: resampy's arithmetic as matrix products, piece by piece), so
  pieces, RMS and 4096-point spectra are matchering's own, band edge and boxcar
  leakage included; rates without a small 44.1 kHz period (say 44 056 Hz) are
  measured through the same filter at their own rate instead (``band_limit_taps``);
* the matching EQ at the target's rate has the filter's magnitude response
  (``resampler_response``) built in, so the master has matchering's band edge.
"""

from __future__ import annotations

import math
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


# resampy's kaiser_best table: 2^13 entries per zero crossing.
_TABLE_PER_CROSSING = 2**13
# Largest output period (44.1 kHz samples) for which ``Resampler`` builds its matrix:
# every common rate has at most 441 (32, 16, 8 kHz); 48/96/192 kHz have 147.
MAX_PERIOD = 441


def internal_length(frames: int, rate: int) -> int:
    """Frames resampy makes of ``frames`` at ``rate`` (it rounds down)."""
    return int(frames * float(INTERNAL_RATE) / float(rate))


class Resampler:
    """resampy's ``kaiser_best`` resampling of a ``rate`` signal to 44.1 kHz, as
    matrix products: outputs come in periods of ``up`` (147 for 48/96 kHz) for every
    ``down`` inputs (160, 320), and each output phase within a period weights the
    same input window the same way, so a period of outputs is one row of inputs times
    one (window x up) matrix of kernel values. Equals resampy to ~1e-7 (resampy
    interpolates its kernel table linearly; this evaluates the kernel)."""

    def __init__(self, rate: int) -> None:
        common = math.gcd(rate, INTERNAL_RATE)
        self.up, self.down = INTERNAL_RATE // common, rate // common
        if self.up > MAX_PERIOD:
            raise ValueError(f"no resampling matrix for {rate} Hz")
        scale = min(1.0, INTERNAL_RATE / rate)
        self._half = math.ceil(ZERO_CROSSINGS / scale) + 1
        width = self.down + 2 * self._half + 1
        # Row j is input n = period start - half + j; column q is output phase q, at
        # t = q * down / up inputs after the period start.
        times = np.arange(self.up) * (self.down / self.up)
        whole = np.floor(times)
        inputs = np.arange(width)[:, None] - self._half
        # resampy steps through its kernel table by int(scale * 8192) entries per input
        # sample, from scale * (distance to the nearest input on that side): keep both.
        step = int(scale * _TABLE_PER_CROSSING) / _TABLE_PER_CROSSING
        left = whole[None, :] - inputs  # 0, 1, ... for inputs at or before t
        right = inputs - whole[None, :] - 1  # 0, 1, ... for inputs after t
        u = np.where(
            left >= 0,
            scale * (times - whole)[None, :] + left * step,
            scale * (1.0 - (times - whole))[None, :] + right * step,
        )
        self._weights = (scale * _kernel(u)).astype(np.float32)
        self._width = width

    @staticmethod
    def available(rate: int) -> bool:
        return INTERNAL_RATE // math.gcd(rate, INTERNAL_RATE) <= MAX_PERIOD

    @property
    def reach(self) -> int:
        """Inputs either side of an output's time that its value depends on (bound)."""
        return self._half + self.down

    def outputs(
        self, signal: npt.NDArray[np.floating], first: int, stop: int, *, offset: int = 0
    ) -> FloatArray:
        """44.1 kHz outputs [first, stop) of a track whose samples from ``offset`` on
        are ``signal`` (zeros outside it: the track's ends, as resampy; the caller
        passes every sample within ``reach`` of the outputs)."""
        periods_from, periods_to = first // self.up, -(-stop // self.up)
        count = periods_to - periods_from
        start = periods_from * self.down - self._half
        span = (count - 1) * self.down + self._width
        window = np.zeros(span, dtype=np.float32)
        lo = max(start, offset)
        hi = min(start + span, offset + signal.shape[0])
        if hi > lo:
            window[lo - start : hi - start] = signal[lo - offset : hi - offset]
        rows = np.lib.stride_tricks.as_strided(
            window,
            shape=(count, self._width),
            strides=(self.down * window.strides[0], window.strides[0]),
            writeable=False,
        )
        values = (np.ascontiguousarray(rows) @ self._weights).reshape(-1)
        skip = first - periods_from * self.up
        result: FloatArray = values[skip : skip + stop - first].astype(np.float64)
        return result
