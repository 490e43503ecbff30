"""Loudness and true peak measured on a stream of blocks.

``mastering.audio.measure`` measures whole arrays: pyloudnorm filters a float64 copy
of the track, and the true-peak meter runs scipy's polyphase resampler (about 0.4 s
per minute of stereo). The engine sees its audio block by block anyway, so it meters
there: the same BS.1770-4 gating as pyloudnorm with its K-weighting coefficients,
and the same 4x oversampling filter as ``measure.true_peak_dbtp`` as matrix products.

Nothing here imports ``scipy.signal`` (pyloudnorm imports it, about 1 s): the
K-weighting biquads are pyloudnorm's formulas evaluated here, run by ``engine.iir``,
and the oversampling filter is ``firwin``'s, computed with numpy. The tests check both
against pyloudnorm and scipy.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import numpy as np
import numpy.typing as npt

from mastering.engine.dsp import BLOCK_FRAMES, FloatArray
from mastering.engine.iir import BlockFilter

# BS.1770-4: 400 ms blocks every 100 ms, -70 LUFS absolute and -10 LU relative gates.
_BLOCK_S = 0.4
_STEP = 0.25
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
_OFFSET = -0.691
# Channel weights (L, R, C, Ls, Rs) as pyloudnorm.
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
# measure.true_peak_dbtp: scipy.signal.resample_poly(x, 4, 1) and its default filter.
_OVERSAMPLING = 4
_HALF_TAPS = 10 * _OVERSAMPLING
_KAISER_BETA = 5.0
# pyloudnorm's K-weighting: a +4 dB high shelf at 1500 Hz, then a 38 Hz high-pass.
_SHELF_GAIN_DB = 4.0
_SHELF_Q = 1 / math.sqrt(2)
_SHELF_HZ = 1500.0
_HIGH_PASS_Q = 0.5
_HIGH_PASS_HZ = 38.0


def k_weighting(rate: float) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """pyloudnorm's K-weighting biquads (``IIRfilter(...).b, .a``) at ``rate``: the RBJ
    cookbook high shelf and high-pass, the same expressions in the same order."""
    gain = 10 ** (_SHELF_GAIN_DB / 40.0)
    w0 = 2.0 * np.pi * (_SHELF_HZ / rate)
    alpha = np.sin(w0) / (2.0 * _SHELF_Q)
    root = 2 * np.sqrt(gain) * alpha
    b0 = gain * ((gain + 1) + (gain - 1) * np.cos(w0) + root)
    b1 = -2 * gain * ((gain - 1) + (gain + 1) * np.cos(w0))
    b2 = gain * ((gain + 1) + (gain - 1) * np.cos(w0) - root)
    a0 = (gain + 1) - (gain - 1) * np.cos(w0) + root
    a1 = 2 * ((gain - 1) - (gain + 1) * np.cos(w0))
    a2 = (gain + 1) - (gain - 1) * np.cos(w0) - root
    shelf = (np.array([b0, b1, b2]) / a0, np.array([a0, a1, a2]) / a0)
    w0 = 2.0 * np.pi * (_HIGH_PASS_HZ / rate)
    alpha = np.sin(w0) / (2.0 * _HIGH_PASS_Q)
    b0, b1, b2 = (1 + np.cos(w0)) / 2, -(1 + np.cos(w0)), (1 + np.cos(w0)) / 2
    a0, a1, a2 = 1 + alpha, -2 * np.cos(w0), 1 - alpha
    high_pass = (np.array([b0, b1, b2]) / a0, np.array([a0, a1, a2]) / a0)
    return [shelf, high_pass]


class LoudnessMeter:
    """Integrated loudness of a track pushed in order, block by block.

    pyloudnorm's gating blocks are ``[int(0.4 * 0.25 * j * rate), int(0.4 * (0.25 * j
    + 1) * rate))``; the meter sums K-weighted squares between consecutive block edges
    as they stream by, so a block's energy is a sum of a few of those segments.
    """

    def __init__(self, rate: int, *, channels: int, frames: int) -> None:
        # pyloudnorm's coefficients, so both meters agree to rounding. float32 products
        # are twice as fast; their rounding (~1e-6 relative) moves the result by far
        # less than 0.001 LU.
        self._filter = _k_weighting_filter(rate)
        self._state = self._filter.zeros(channels)
        self._rate = rate
        self._frames = frames
        self._position = 0
        duration = frames / rate
        count = int(np.round((duration - _BLOCK_S) / (_BLOCK_S * _STEP))) + 1
        self._enough = frames >= math.ceil(_BLOCK_S * rate)
        starts = [int(_BLOCK_S * (j * _STEP) * rate) for j in range(max(count, 0))]
        stops = [int(_BLOCK_S * (j * _STEP + 1) * rate) for j in range(max(count, 0))]
        edges = np.unique(np.clip(np.array([0, frames, *starts, *stops]), 0, frames))
        self._edges = edges
        self._starts = np.searchsorted(edges, np.clip(starts, 0, frames))
        self._stops = np.searchsorted(edges, np.clip(stops, 0, frames))
        self._segments = np.zeros((max(edges.shape[0] - 1, 1), channels))

    def push(self, block: FloatArray) -> None:
        if block.shape[0] == 0:
            return
        filtered, self._state = self._filter.apply(block, self._state)
        squares = np.square(filtered, out=filtered)
        start, stop = self._position, self._position + block.shape[0]
        inner = self._edges[(self._edges > start) & (self._edges < stop)] - start
        cuts = np.concatenate([[0], inner]).astype(np.intp)
        first = int(np.searchsorted(self._edges, start, side="right")) - 1
        self._segments[first : first + cuts.shape[0]] += np.add.reduceat(
            squares, cuts, axis=0, dtype=np.float64
        )
        self._position = stop

    def integrated(self) -> float | None:
        """LUFS, or None when undefined (shorter than one block, or all gated out)."""
        if not self._enough or self._position != self._frames:
            return None
        cumulative = np.concatenate([np.zeros((1, self._segments.shape[1])), self._segments])
        cumulative = np.cumsum(cumulative, axis=0)
        energy = (cumulative[self._stops] - cumulative[self._starts]) / (_BLOCK_S * self._rate)
        gains = np.array(_CHANNEL_GAINS[: energy.shape[1]])
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            block_lufs = _OFFSET + 10.0 * np.log10(energy @ gains)
            gated = block_lufs >= _ABSOLUTE_GATE
            relative = _OFFSET + 10.0 * np.log10(energy[gated].mean(axis=0) @ gains)
            relative += _RELATIVE_GATE
            kept = (block_lufs > relative) & (block_lufs > _ABSOLUTE_GATE)
            average = np.nan_to_num(energy[kept].mean(axis=0))
            loudness = float(_OFFSET + 10.0 * np.log10(average @ gains))
        return loudness if math.isfinite(loudness) else None


def _oversampling_phases() -> npt.NDArray[np.float64]:
    """resample_poly's 4x filter split into its 4 phases, as (21 taps, 4 phases).

    resample_poly's output ``y[4n + p] = sum_m h[40 + p + 4m] x[n - m]``: phase p is
    a 21-tap FIR over m in [-10, 10] (zero where it falls outside h).
    """
    taps = _lowpass_taps(2 * _HALF_TAPS + 1, 1.0 / _OVERSAMPLING, _KAISER_BETA)
    taps *= _OVERSAMPLING
    span = _HALF_TAPS // _OVERSAMPLING
    phases = np.zeros((2 * span + 1, _OVERSAMPLING))
    for phase in range(_OVERSAMPLING):
        for j in range(2 * span + 1):
            index = _HALF_TAPS + phase + _OVERSAMPLING * (j - span)
            if 0 <= index <= 2 * _HALF_TAPS:
                phases[j, phase] = taps[index]
    return phases


def _lowpass_taps(count: int, cutoff: float, beta: float) -> npt.NDArray[np.float64]:
    """``scipy.signal.firwin(count, cutoff, window=("kaiser", beta))``: a windowed sinc
    (cutoff relative to Nyquist), scaled to unit gain at DC."""
    middle = np.arange(count) - (count - 1) / 2.0
    taps: npt.NDArray[np.float64] = cutoff * np.sinc(cutoff * middle)
    taps *= np.kaiser(count, beta)
    taps /= taps.sum()
    return taps


@cache
def _k_weighting_filter(rate: int) -> BlockFilter:
    return BlockFilter(k_weighting(rate), dtype=np.float32)


# Frames per row of the true-peak products: outputs of a row need the 10 samples
# either side, taken from the rows before and after.
_PEAK_CHUNK = 32


@cache
def _peak_matrices() -> tuple[npt.NDArray[np.float32], ...]:
    """The 4x oversampling of a row of ``_PEAK_CHUNK`` samples as three products: from
    the previous row's last ``span`` samples, the row itself, the next row's first
    ``span``; columns ``phase * chunk + i`` are output ``4 (row start + i) + phase``."""
    phases = _oversampling_phases()  # (2 span + 1 taps, 4 phases), tap j is lag j - span
    span = phases.shape[0] // 2
    chunk = _PEAK_CHUNK
    # Input position j (relative to the row start, -span .. chunk + span - 1) reaches
    # output i of a phase through the tap at lag i - j.
    positions = np.arange(-span, chunk + span)[:, None]
    lags = np.arange(chunk)[None, :] - positions
    inside = np.abs(lags) <= span
    columns = [
        np.where(inside, phases[np.clip(lags + span, 0, 2 * span), p], 0.0) for p in range(4)
    ]
    weights = np.concatenate(columns, axis=1).astype(np.float32)  # (chunk + 2 span, 4 chunk)
    return weights[:span], weights[span : span + chunk], weights[span + chunk :]


def true_peak(samples: FloatArray) -> float:
    """Linear true peak of (frames, channels) ``samples``, as measure.true_peak_dbtp
    (resample_poly's 4x filter, zeros beyond the ends), as block-wise matrix products:
    rows of 32 samples times the (banded) oversampling matrix, ~10x cheaper than FFTs
    for a 21-tap filter."""
    before, own, after = _peak_matrices()
    span, chunk = before.shape[0], _PEAK_CHUNK
    frames = samples.shape[0]
    block = BLOCK_FRAMES
    peak = 0.0
    for channel in range(samples.shape[1]):
        for start in range(0, frames, block):
            stop = min(start + block, frames)
            rows = -(-(stop - start) // chunk)
            # One row of context either side (zeros past the track's ends).
            extended = np.zeros((rows + 2) * chunk, dtype=np.float32)
            lead, tail = min(chunk, start), min(chunk, frames - stop)
            extended[chunk - lead : chunk + stop - start + tail] = samples[
                start - lead : stop + tail, channel
            ]
            grid = extended.reshape(rows + 2, chunk)
            out = grid[1:-1] @ own
            out += grid[:-2, chunk - span :] @ before
            out += grid[2:, :span] @ after
            # The last row may run past ``stop``: those outputs belong to the next block.
            valid = stop - start - (rows - 1) * chunk
            full = np.abs(out[:-1]).max() if rows > 1 else 0.0
            last = np.abs(out[-1].reshape(4, chunk)[:, :valid]).max()
            peak = max(peak, float(full), float(last))
    return peak


def to_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else -math.inf
