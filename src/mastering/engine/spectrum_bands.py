"""A track's average level in one-third-octave bands, measured block by block.

The bands are the 28 one-third-octave bands of IEC 61260-1 / ISO 266 from 31.5 Hz to
16 kHz: the bands a graphic equaliser or a room analyser shows, narrow enough that
the web page's plot of target, reference and result shows the tonal balance a
matching EQ changes, and the same list at every sample rate from 35.6 kHz up (the
16-kHz band ends at 17.8 kHz). Below 31.5 Hz a band is narrower than the analysis
can resolve well (about 3 Hz per bin; the 25-Hz band is 5.8 Hz wide), and a 20-kHz
band would end above 44.1 kHz's Nyquist frequency. A band that does not fit under
a track's Nyquist frequency (at 32 kHz and below) has no level: ``None``.

Each band's centre is exact base-10 (``1000 * 10 ** (k / 10)``: 31.62, 39.81, ...)
and its edges are a sixth of a decade either side; ``BAND_CENTRES_HZ`` gives the
nominal labels (31.5, 40, 50, ...), as a plot's axis reads them.

The level is the track's mean power in the band, averaged over its channels (the
power of an average channel: left and right alike read as either, and a stereo pair
in anti-phase reads as its channels do, not as a cancelled mid), in dB such that a
full-scale sine reads 0 dB in its band (AES17's convention for dBFS).

How: a short-time Fourier transform (``engine.fft``, float32) with a sine window
2^k points long (bins of at most 3 Hz) hopping by half a window. The sine window's
squares at half-window hops add up to exactly one, so every sample counts equally
and the band powers of all bins add up to the track's mean square (Parseval), with
zeros padded either side so the first and last samples count fully too. The
periodogram's bins are summed over frames (one array of n/2 + 1 floats: memory does
not grow with the track), then each band sums its bins, a bin at a band's edge
counted in proportion to how much of its width lies inside: an ideal band-pass,
which IEC 61260's filters approximate.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

from mastering.engine import fft
from mastering.engine.dsp import Float32Array, Float64Array, FloatArray

# Nominal centres (ISO 266 preferred numbers), what a plot's axis shows.
BAND_CENTRES_HZ: tuple[float, ...] = (
    31.5, 40.0, 50.0, 63.0, 80.0, 100.0, 125.0, 160.0, 200.0, 250.0,
    315.0, 400.0, 500.0, 630.0, 800.0, 1000.0, 1250.0, 1600.0, 2000.0, 2500.0,
    3150.0, 4000.0, 5000.0, 6300.0, 8000.0, 10000.0, 12500.0, 16000.0,
)  # fmt: skip
# Their exact base-10 centres: 1000 Hz * 10^(k/10), k = -15 ... 12.
_BAND_INDICES = np.arange(-15, 13)
EXACT_CENTRES_HZ: Float64Array = 1000.0 * 10.0 ** (_BAND_INDICES / 10.0)
LOWER_EDGES_HZ: Float64Array = EXACT_CENTRES_HZ * 10.0 ** (-1.0 / 20.0)
UPPER_EDGES_HZ: Float64Array = EXACT_CENTRES_HZ * 10.0 ** (1.0 / 20.0)
# Widest bin the analysis uses: ~2.4 bins across the 31.5-Hz band (7.3 Hz wide).
MAX_BIN_HZ = 3.0
# Below this a band's reading is the FFT's own float32 rounding, not the signal's.
FLOOR_DB = -140.0


def fft_size(rate: int) -> int:
    """The STFT's length at ``rate``: the shortest power of two with bins <= 3 Hz."""
    return 1 << math.ceil(math.log2(rate / MAX_BIN_HZ))


@cache
def _window(size: int) -> Float32Array:
    # sin(pi (n + 1/2) / N): its squares at hops of N/2 are sin^2 + cos^2 = 1.
    window: Float32Array = np.sin(np.pi * (np.arange(size) + 0.5) / size).astype(np.float32)
    return window


@cache
def band_weights(rate: int, size: int) -> Float64Array:
    """(size // 2 + 1, bands): the share of each rfft bin's width (centred on the
    bin) inside each band. Bins are counted twice (the negative frequencies' half)
    except DC and Nyquist, so ``power @ weights / size`` is each band's mean square."""
    spacing = rate / size
    centres = np.arange(size // 2 + 1) * spacing
    low = np.maximum(centres - spacing / 2, 0.0)[:, None]
    high = np.minimum(centres + spacing / 2, rate / 2)[:, None]
    inside = np.minimum(high, UPPER_EDGES_HZ) - np.maximum(low, LOWER_EDGES_HZ)
    weights: Float64Array = np.clip(inside, 0.0, None) / spacing
    weights[1:-1] *= 2.0
    return weights


def measurable(rate: int) -> npt.NDArray[np.bool_]:
    """Bands wholly under the Nyquist frequency of ``rate``."""
    measured: npt.NDArray[np.bool_] = rate / 2 >= UPPER_EDGES_HZ
    return measured


class BandMeter:
    """Mean power per band of (frames, channels) blocks pushed in order."""

    def __init__(self, rate: int, *, channels: int) -> None:
        self._rate = rate
        self._size = fft_size(rate)
        self._hop = self._size // 2
        self._window = _window(self._size)
        # Half a window of zeros first: the first samples get both halves' weight.
        self._pending: Float32Array = np.zeros((self._hop, channels), dtype=np.float32)
        self._power: Float64Array = np.zeros(self._size // 2 + 1)
        self._frames = 0

    @property
    def frames(self) -> int:
        return self._frames

    def push(self, block: FloatArray) -> None:
        if block.shape[0] == 0:
            return
        self._frames += block.shape[0]
        self._pending = np.concatenate([self._pending, block.astype(np.float32, copy=False)])
        self._transform()

    def _transform(self) -> None:
        """Transform every whole window of what is pending; keep the rest."""
        pending = self._pending
        if pending.shape[0] < self._size:
            return
        count = (pending.shape[0] - self._size) // self._hop + 1
        for channel in range(pending.shape[1]):
            samples = np.ascontiguousarray(pending[: (count + 1) * self._hop, channel])
            framed = np.lib.stride_tricks.sliding_window_view(samples, self._size)[:: self._hop]
            spectra = fft.rfft(framed * self._window, axis=1)
            self._power += _squared_magnitude(spectra).sum(axis=0, dtype=np.float64)
        self._pending = pending[count * self._hop :].copy()

    def band_power(self) -> Float64Array:
        """Each band's mean square per channel so far (the stream ends here: the last
        window is completed with zeros); NaN for a band above the Nyquist frequency."""
        channels = self._pending.shape[1]
        self._pending = np.concatenate(
            [self._pending, np.zeros((self._size, channels), dtype=np.float32)]
        )
        self._transform()
        self._pending = self._pending[:0]
        frames = max(self._frames, 1)
        power: Float64Array = self._power @ band_weights(self._rate, self._size)
        power /= self._size * frames * channels
        power[~measurable(self._rate)] = np.nan
        return power

    def levels_db(self) -> list[float | None]:
        """Each band's level in dB (a full-scale sine reads 0 dB in its band); None for
        a band above the Nyquist frequency or below ``FLOOR_DB``."""
        return [_level_db(power) for power in self.band_power().tolist()]


def _level_db(power: float) -> float | None:
    # A sine of amplitude A has mean square A^2 / 2: doubled, full scale is 0 dB.
    if not power > 0.0:
        return None
    level = 10.0 * math.log10(2.0 * power)
    return level if FLOOR_DB <= level < math.inf else None


def _squared_magnitude(spectra: npt.NDArray[np.complex64]) -> Float32Array:
    real, imaginary = spectra.real, spectra.imag
    squared: Float32Array = real * real + imaginary * imaginary
    return squared
