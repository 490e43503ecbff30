"""Loudness range (EBU Tech 3342) of a stream of blocks.

Short-term loudness is BS.1770 loudness over a 3-s window. Tech 3342 asks for windows
overlapping by at least 2 s; this meter slides them every 100 ms, as ffmpeg's
``ebur128`` does, so both read the same windows: a window ends at every multiple of
``rate // 10`` frames from 3 s on (a tail shorter than 100 ms, or a track shorter than
3 s, gives no window, as in ffmpeg). Loudness range is then, over those values:

1. the absolute gate: values at or above -70 LUFS;
2. the relative gate: values at or above the power mean of (1), minus 20 LU;
3. LRA: the 95th minus the 10th percentile of (2), with Tech 3342's percentile
   (the sorted values' element ``round((n - 1) p)``, counting from 0).

``>=`` at both gates is Tech 3342's example code (and ffmpeg's); BS.1770 writes ``>``
for the integrated loudness's gates, which ``engine.loudness`` follows as pyloudnorm.

Memory: the meter keeps one float per 100 ms (each window's mean square), not samples:
about 290 KB for an hour. The K-weighting is ``engine.loudness``'s; a caller that
already runs a ``LoudnessMeter`` passes its K-weighted squares (``push_squares``), so
the filter runs once for both.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from mastering.engine.dsp import Float64Array, FloatArray
from mastering.engine.loudness import CHANNEL_GAINS, KWeighting, segment_energy

# Short-term windows slide by a tenth of a second, ffmpeg's hop (Tech 3342: <= 1 s).
HOPS_PER_SECOND = 10
# A 3-s window is 30 hops.
WINDOW_HOPS = 30
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -20.0
LOW_PERCENTILE = 0.10
HIGH_PERCENTILE = 0.95
# One cut: a sum over all frames.
_FIRST = np.zeros(1, dtype=np.intp)
# A window's hops, counted from its first.
_WINDOW = np.arange(WINDOW_HOPS)
# BS.1770's offset from mean square to LUFS.
_OFFSET = -0.691


def loudness_of(power: Float64Array) -> Float64Array:
    """LUFS of channel-weighted mean squares (-inf for zero)."""
    with np.errstate(divide="ignore"):
        loudness: Float64Array = _OFFSET + 10.0 * np.log10(power)
    return loudness


def loudness_range(short_term_power: Float64Array) -> float | None:
    """LRA in LU of short-term mean squares (Tech 3342), or None when no window passes
    the absolute gate (silence, or shorter than one window)."""
    loudness = loudness_of(short_term_power)
    passed = loudness >= ABSOLUTE_GATE_LUFS
    if not passed.any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gate = float(loudness_of(short_term_power[passed].mean())) + RELATIVE_GATE_LU
    kept = np.sort(loudness[passed & (loudness >= gate)])
    count = kept.shape[0]
    low = kept[_percentile_index(count, LOW_PERCENTILE)]
    high = kept[_percentile_index(count, HIGH_PERCENTILE)]
    return float(high - low)


def _percentile_index(count: int, fraction: float) -> int:
    # Tech 3342: round((n - 1) * p + 1) counting from 1, rounding halves up (MATLAB's
    # round; Python's rounds halves to even).
    return math.floor((count - 1) * fraction + 0.5)


class LoudnessRangeMeter:
    """Short-term loudness every 100 ms and the loudness range of a stream.

    ``push`` takes (frames, channels) samples; ``push_squares`` takes the K-weighted
    squares ``LoudnessMeter.push`` returns for them (not both for the same stream).
    ``gains`` weighs the channels, as ``LoudnessMeter``'s.
    """

    def __init__(self, rate: int, *, channels: int, gains: tuple[float, ...] | None = None) -> None:
        self._hop = rate // HOPS_PER_SECOND
        if self._hop == 0:
            raise ValueError(f"a sample rate of {rate} Hz is too low to meter")
        # ffmpeg divides by 3 * rate: the same at every rate divisible by 10.
        self._window_frames = WINDOW_HOPS * self._hop
        self._gains = np.array((gains or CHANNEL_GAINS)[:channels], dtype=np.float32)
        self._channels = channels
        self._rate = rate
        self._weighting: KWeighting | None = None
        # Weighted energy and length of the hop under way.
        self._partial_energy = 0.0
        self._partial_frames = 0
        # The last hops' energies, up to one short of a window.
        self._recent: Float64Array = np.zeros(0)
        self._short_term: list[Float64Array] = []

    def push(self, block: FloatArray) -> None:
        if self._weighting is None:
            self._weighting = KWeighting(self._rate, self._channels)
        if block.shape[0]:
            self.push_squares(self._weighting.squares(block))

    def push_squares(self, squares: FloatArray) -> None:
        """Meter the next (frames, channels) K-weighted squares."""
        frames = squares.shape[0]
        if frames == 0:
            return
        needed = self._hop - self._partial_frames
        if frames < needed:
            self._partial_energy += float(segment_energy(squares, self._gains, _FIRST)[0])
            self._partial_frames += frames
            return
        whole = (frames - needed) // self._hop
        # Cuts: the hop under way ends, whole hops, then the start of the next one.
        cuts = np.arange(needed - self._hop, frames, self._hop, dtype=np.intp)
        cuts[0] = 0
        energy = segment_energy(squares, self._gains, cuts)
        first = self._partial_energy + float(energy[0])
        self._partial_energy = float(energy[whole + 1]) if energy.shape[0] > whole + 1 else 0.0
        self._partial_frames = frames - needed - whole * self._hop
        self._add_hops(np.concatenate([[first], energy[1 : whole + 1]]))

    def _add_hops(self, hops: Float64Array) -> None:
        energies = np.concatenate([self._recent, hops])
        count = energies.shape[0] - WINDOW_HOPS + 1
        if count > 0:
            # Each window's hops as a row (cheaper than sliding_window_view's checks).
            windows = energies[np.arange(count)[:, None] + _WINDOW]
            self._short_term.append(windows.sum(axis=1) / self._window_frames)
        self._recent = energies[-(WINDOW_HOPS - 1) :].copy()

    def short_term_power(self) -> Float64Array:
        """Every window's channel-weighted mean square so far, in order."""
        if not self._short_term:
            return np.zeros(0)
        if len(self._short_term) > 1:
            self._short_term = [np.concatenate(self._short_term)]
        return self._short_term[0]

    def short_term_loudness(self) -> Float64Array:
        """Every window's loudness (LUFS) so far; -inf for digital silence."""
        return loudness_of(self.short_term_power())

    def loudness_range(self) -> float | None:
        """LRA (LU) of what was pushed; None when undefined."""
        return loudness_range(self.short_term_power())
