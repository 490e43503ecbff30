"""Integrated loudness (BS.1770-4, EBU R128) measured on a stream of blocks.

pyloudnorm measures whole arrays and filters a float64 copy of the track; the engine
sees its audio block by block anyway, so it meters there: the same BS.1770-4 gating
as pyloudnorm with its K-weighting coefficients (the tests check both against
pyloudnorm, their outside oracle).

Nothing here imports ``scipy.signal`` (pyloudnorm imports it, about 1 s): the
K-weighting biquads are pyloudnorm's formulas evaluated here, run by ``engine.iir``.
True peak is ``engine.true_peak``.
"""

from __future__ import annotations

import bisect
import math
import warnings
from functools import cache

import numpy as np
import numpy.typing as npt

from mastering.engine.dsp import FloatArray
from mastering.engine.iir import BlockFilter, Scratch

# BS.1770-4: 400 ms blocks every 100 ms, -70 LUFS absolute and -10 LU relative gates.
_BLOCK_S = 0.4
_STEP = 0.25
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
# Gating-block edges are laid out this far ahead of the stream at a time.
_LOOKAHEAD_S = 60
_OFFSET = -0.691
# Channel weights (L, R, C, Ls, Rs) as pyloudnorm.
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
# Mid and side of a stereo pair: L^2 + R^2 = 2 (M^2 + S^2), so metering M and S with
# weight 2 each measures the left/right pair they make.
MID_SIDE_GAINS = (2.0, 2.0)
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


class KWeighting:
    """The K-weighting filter run over a stream of (frames, channels) blocks."""

    def __init__(self, rate: int, channels: int) -> None:
        # pyloudnorm's coefficients, so both meters agree to rounding. float32 products
        # are twice as fast; their rounding (~1e-6 relative) moves a loudness by far
        # less than 0.001 LU.
        self._filter = _k_weighting_filter(rate)
        self._state = self._filter.zeros(channels)
        self._scratch = Scratch()

    def squares(self, block: FloatArray) -> npt.NDArray[np.float32]:
        """The next block's K-weighted squares (frames, channels), float32."""
        filtered, self._state = self._filter.apply(block, self._state, scratch=self._scratch)
        squares: npt.NDArray[np.float32] = np.square(filtered, out=filtered)
        return squares


def segment_energy(
    squares: FloatArray, gains: npt.NDArray[np.float32], cuts: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """Channel-weighted sums of (frames, channels) ``squares`` from each of the sorted
    ``cuts`` (the first 0, all before the end) to the next, the last to the end.

    Summed in the squares' float32: numpy sums each segment pairwise, within about
    1e-7 of the exact sum (float32's own rounding; a float64 sum costs a converting
    pass). When all channels weigh the same (stereo, mid and side) the segments of the
    interleaved squares are summed as they lie, in one pass and no weighted copy.
    """
    frames, channels = squares.shape
    if np.all(gains == gains[0]):
        flat = np.add.reduceat(squares.reshape(frames * channels), cuts * channels)
        energy: npt.NDArray[np.float64] = flat.astype(np.float64) * float(gains[0])
    else:
        energy = np.add.reduceat(squares @ gains, cuts).astype(np.float64)
    return energy


def block_edges(rate: int, frames: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """pyloudnorm's 400 ms gating blocks every 100 ms: (starts, stops) in frames.

    ``[int(0.4 * 0.25 * j * rate), int(0.4 * (0.25 * j + 1) * rate))``, cut to the track.
    """
    count = max(int(np.round((frames / rate - _BLOCK_S) / (_BLOCK_S * _STEP))) + 1, 0)
    starts, stops = _blocks(np.arange(count), rate)
    return np.clip(starts, 0, frames), np.clip(stops, 0, frames)


def _blocks(
    indices: npt.NDArray[np.integer], rate: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Starts and stops of the gating blocks ``indices``: pyloudnorm's expressions, in
    float64 as in Python, truncated as ``int`` does, so the same rounding."""
    starts = (_BLOCK_S * (indices * _STEP) * rate).astype(np.intp)
    stops = (_BLOCK_S * (indices * _STEP + 1) * rate).astype(np.intp)
    return starts, stops


def gated_loudness(block_energy: npt.NDArray[np.float64]) -> float | None:
    """Integrated loudness of gating blocks' channel-weighted mean squares (BS.1770-4:
    -70 LUFS absolute gate, then -10 LU below the gated mean); None when undefined."""
    if block_energy.shape[0] == 0:
        return None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        block_lufs = _OFFSET + 10.0 * np.log10(block_energy)
        gated = block_lufs >= _ABSOLUTE_GATE
        relative = _OFFSET + 10.0 * np.log10(block_energy[gated].mean()) + _RELATIVE_GATE
        kept = (block_lufs > relative) & (block_lufs > _ABSOLUTE_GATE)
        average = float(np.nan_to_num(block_energy[kept].mean()))
        loudness = _OFFSET + 10.0 * math.log10(average) if average > 0.0 else -math.inf
    return loudness if math.isfinite(loudness) else None


class LoudnessMeter:
    """Integrated loudness of a stream pushed in order, block by block.

    pyloudnorm's gating blocks overlap by 75 %; the meter sums K-weighted squares
    between consecutive block edges as they stream by (so a block's energy is a sum of
    a few of those segments), without needing the stream's length in advance.
    ``gains`` weighs the channels (BS.1770's by default; ``MID_SIDE_GAINS`` to meter a
    stereo pair given as mid and side).
    """

    def __init__(
        self,
        rate: int,
        *,
        channels: int,
        frames: int | None = None,
        gains: tuple[float, ...] | None = None,
    ) -> None:
        self._weighting = KWeighting(rate, channels)
        self._rate = rate
        self._expected = frames
        self._position = 0
        self._gains = np.array((gains or CHANNEL_GAINS)[:channels], dtype=np.float64)
        self._gains_f32 = self._gains.astype(np.float32)
        self._edges: list[int] = [0]  # sorted
        self._covered = -1  # every block starting at or before it has its edges
        self._next_block = 0
        self._segments = np.zeros(64)  # channel-weighted

    def _edges_until(self, position: int) -> None:
        """Add the edges of every gating block that starts at or before ``position``
        (and of the blocks in the next minute, so most calls have nothing to do).

        Blocks are added in order, so an edge at or before ``position`` is never added
        later (a later block starts after it, and stops after its start): segments
        already summed keep their indices. Edges past the end of the stream split
        nothing that was pushed.
        """
        if position <= self._covered:
            return
        position = self._covered = position + _LOOKAHEAD_S * self._rate
        # Blocks start every 100 ms: two past the estimate is past ``position``.
        upper = max(int(position / (_BLOCK_S * _STEP * self._rate)) + 3, self._next_block)
        starts, stops = _blocks(np.arange(self._next_block, upper), self._rate)
        while starts.shape[0] and starts[-1] <= position:  # only at very low rates
            upper += upper
            starts, stops = _blocks(np.arange(self._next_block, upper), self._rate)
        count = int(np.searchsorted(starts, position, side="right"))
        if count:
            # New edges all lie after the previous blocks' starts: only the few edges
            # after the first new one (earlier blocks' stops) are merged with them.
            new = set(starts[:count].tolist())
            new.update(stops[:count].tolist())
            index = bisect.bisect_left(self._edges, min(new))
            new.update(self._edges[index:])
            del self._edges[index:]
            self._edges.extend(sorted(new))
            self._next_block += count
        if len(self._edges) > self._segments.shape[0]:
            grown = np.zeros(2 * len(self._edges))
            grown[: self._segments.shape[0]] = self._segments
            self._segments = grown

    def push(self, block: FloatArray) -> npt.NDArray[np.float32]:
        """Meter the next block; returns its K-weighted squares for other uses."""
        if block.shape[0] == 0:
            return np.zeros((0, block.shape[1]), dtype=np.float32)
        squares = self._weighting.squares(block)
        start, stop = self._position, self._position + block.shape[0]
        self._edges_until(stop)
        # The segment ``start`` lies in, and the edges inside the block: a look-up in
        # the sorted edges, not a pass over all of them (an hour has 72 000).
        first = bisect.bisect_right(self._edges, start) - 1
        last = bisect.bisect_left(self._edges, stop)
        cuts = np.array([start, *self._edges[first + 1 : last]], dtype=np.intp) - start
        self._segments[first : first + cuts.shape[0]] += segment_energy(
            squares, self._gains_f32, cuts
        )
        self._position = stop
        return squares

    @property
    def gains(self) -> npt.NDArray[np.float64]:
        return self._gains

    @property
    def frames(self) -> int:
        return self._position

    def integrated(self) -> float | None:
        """LUFS, or None when undefined (shorter than one block, or all gated out)."""
        frames = self._position
        if frames < math.ceil(_BLOCK_S * self._rate):
            return None
        if self._expected is not None and frames != self._expected:
            return None
        starts, stops = block_edges(self._rate, frames)
        self._edges_until(frames)
        edges = np.asarray(self._edges, dtype=np.intp)
        cumulative = np.concatenate([[0.0], np.cumsum(self._segments[: edges.shape[0]])])
        # An edge past the end (the last block cut short) counts what was pushed.
        first = np.minimum(np.searchsorted(edges, starts), edges.shape[0])
        last = np.minimum(np.searchsorted(edges, stops), edges.shape[0])
        energy = (cumulative[last] - cumulative[first]) / (_BLOCK_S * self._rate)
        return gated_loudness(energy)


@cache
def _k_weighting_filter(rate: int) -> BlockFilter:
    return BlockFilter(k_weighting(rate), dtype=np.float32)
