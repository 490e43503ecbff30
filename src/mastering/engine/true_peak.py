"""True peak: the peak of the signal between its samples, as BS.1770-4 Annex 2 means it.

A sample-peak meter misses the overs between samples that a DAC, a resampler or a
lossy decoder reconstructs. BS.1770 estimates them by interpolating 4x. Two things
make such an estimate read low, and a limiter that trusts it lets the difference
through (measured: a master limited against a 4x meter with a 32-tap-per-phase
filter read 0.14 dB over its ceiling on ffmpeg's ``ebur128=peak=true`` and 0.14 dB
more on a 32x interpolation):

* a short interpolation filter droops above ~15 kHz, so bright peaks are missed: the
  filter here is a 193-tap Kaiser-windowed sinc (48 taps per phase, beta 6) cut at
  the original Nyquist frequency, flat to within ~0.01 dB where music has energy;
* the true maximum lies between the 4x points (up to 0.15 dB for content at
  10 kHz), exactly where a limiter has pushed every 4x point to its ceiling: each
  group's largest 4x value is refined by the parabola through it and its two
  neighbours.

Against a 32x interpolation with a 64-tap-per-phase filter this reads within 0.015 dB
on limited, hard-clipped and near-Nyquist material (``tests/engine``), and at or
above ffmpeg's meter, which samples at 192 kHz.

The interpolation is done as matrix products on rows of ``ROW`` samples (with the
filter's reach either side), which BLAS runs on every core: about 0.2 s for three
minutes of stereo, faster than FFT convolution for a filter this short. Everything
returns maxima per *group* of samples, what the limiter's control signal needs;
``true_peak`` is the maximum of those.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

from mastering.engine.dsp import BLOCK_FRAMES, Float32Array, FloatArray

OVERSAMPLING = 8
TAPS_PER_PHASE = 48
KAISER_BETA = 6.0
# How far above this meter other BS.1770 meters may read the same file. ffmpeg's
# ``ebur128=peak=true`` resamples to 192 kHz with a short filter that lets some of the
# spectrum's images through: on music it read up to 0.12 dB above a 32x interpolation
# (and this meter), more on pure high-frequency noise. A file counts as under a
# ceiling when this meter reads it this much below.
METER_TOLERANCE_DB = 0.15
# Input samples on either side that an interpolated value depends on.
REACH = TAPS_PER_PHASE // 2
# Samples per matrix-product row: 64 measured fastest (BLAS likes the 96 x 256 shape).
ROW = 64


@cache
def interpolation_filter() -> npt.NDArray[np.float64]:
    """The 4x interpolation filter (129 taps, unit gain at DC after upsampling)."""
    count = OVERSAMPLING * TAPS_PER_PHASE + 1
    middle = np.arange(count) - (count - 1) / 2.0
    cutoff = 1.0 / OVERSAMPLING
    taps: npt.NDArray[np.float64] = (
        cutoff * np.sinc(cutoff * middle) * np.kaiser(count, KAISER_BETA)
    )
    taps *= OVERSAMPLING / taps.sum()
    return taps


# The screens that spare ``TruePeakMeter`` interpolating rows that cannot hold the
# track's peak. An interpolated value is a weighted sum of the samples within REACH, so
# it is at most the largest column sum of |filter| (~2.74, ``reach_gain``) times the
# largest of them; the parabola through three values a refinement fits peaks at most
# a quarter above the largest (its vertex correction is (l - r)^2 / (8 (2m - l - r))
# <= m / 4 for 0 <= l, r <= m). That bound is rigorous but loose (~10.7 dB).
_REFINEMENT_GAIN = 1.25
# The second screen, on rows that pass the first: the values half-way between samples.
# A signal band-limited to B peaks at most 1 / cos(pi B / R) above its largest value on
# a grid of rate R (3.01 dB for B = fs / 2 on the 2x grid); the interpolation filter's
# transition band lets through a little above fs / 2 (to ~0.54 fs: 3.5 dB), and 0.5 dB
# more covers the refinement, which on such a grid moves a peak by hundredths of a dB.
_HALF_SAMPLE_SCREEN = 10.0 ** (4.0 / 20.0)


def _interpolation_matrix(row: int, positions: npt.NDArray[np.int64]) -> Float32Array:
    """(row + 2 REACH, positions): the interpolated values at ``positions`` (in
    1 / OVERSAMPLING steps from the row's first sample) from the row's samples and
    their context (REACH either side)."""
    taps = interpolation_filter()
    centre = (taps.shape[0] - 1) // 2
    inputs = np.arange(row + 2 * REACH)[:, None] - REACH  # position relative to the row
    # Upsampled index n draws on input j through tap centre + n - OVERSAMPLING * j.
    index = centre + positions[None, :] - OVERSAMPLING * inputs
    inside = (index >= 0) & (index < taps.shape[0])
    matrix = np.where(inside, taps[np.clip(index, 0, taps.shape[0] - 1)], 0.0)
    return matrix.astype(np.float32)


@cache
def _row_matrix(row: int) -> Float32Array:
    """(row + 2 REACH, OVERSAMPLING * row): column ``OVERSAMPLING * i + p`` is the value
    at sample ``i + p / OVERSAMPLING`` of the row."""
    return _interpolation_matrix(row, np.arange(OVERSAMPLING * row))


@cache
def _edge_matrix(row: int) -> Float32Array:
    """(row + 2 REACH, 2): the values just outside the row, at -1 / OVERSAMPLING and at
    ``row``: the neighbours a refinement at the row's edges needs, so that a row's
    peaks depend on nothing but its samples and their context. (Their own columns,
    so the row's values stay contiguous: argmax over a strided view is twice as slow.)"""
    return _interpolation_matrix(row, np.array([-1, OVERSAMPLING * row]))


@cache
def _half_sample_matrix(row: int) -> Float32Array:
    """(row + 2 REACH, row): the interpolated values half-way after each sample of a row."""
    return _interpolation_matrix(row, OVERSAMPLING // 2 + OVERSAMPLING * np.arange(row))


@cache
def reach_gain() -> float:
    """The most any interpolated value can exceed the largest |sample| it draws on (the
    filter's largest column sum of |h|, ~2.74)."""
    return float(np.abs(_row_matrix(ROW)).sum(axis=0).max())


def _row_max(values: Float32Array) -> Float32Array:
    """The largest of each row of (rows, width) ``values`` (width a power of two): the
    rows folded in halves of alternate elements, whole-array maxima that numpy
    vectorises across rows; ``max(axis=1)`` on rows of 64 runs a short reduction per
    row, four times slower."""
    folded = values
    while folded.shape[1] > 1 and folded.shape[1] % 2 == 0:
        folded = np.maximum(folded[:, 0::2], folded[:, 1::2])
    largest: Float32Array = folded.max(axis=1) if folded.shape[1] > 1 else folded[:, 0]
    return largest


def _coarse_values(windows: Float32Array) -> Float32Array:
    """(rows, ROW): for each sample of the rows ``windows`` give, the larger of |the
    sample| and |the value half-way after it|, the grid both screens bound a
    band-limited peak from (``_HALF_SAMPLE_SCREEN``)."""
    coarse: Float32Array = windows @ _half_sample_matrix(ROW)
    np.abs(coarse, out=coarse)
    np.maximum(coarse, np.abs(windows[:, REACH : REACH + ROW]), out=coarse)
    return coarse


def _windows(channel: Float32Array, rows: int) -> Float32Array:
    """(rows, ROW + 2 REACH) overlapping views of the contiguous 1-D ``channel``: each
    row's samples with their context either side."""
    stride = channel.strides[0]
    windows: Float32Array = np.lib.stride_tricks.as_strided(
        channel, shape=(rows, ROW + 2 * REACH), strides=(ROW * stride, stride), writeable=False
    )
    return windows


class _Scratch:
    """A reused buffer for the interpolated values: a fresh array of a few MB per block
    costs page faults that made the matrix product twice as slow."""

    def __init__(self) -> None:
        self._buffer = np.zeros((0, OVERSAMPLING * ROW), dtype=np.float32)

    def values(self, windows: Float32Array) -> tuple[Float32Array, Float32Array]:
        """|interpolated values| of ``windows``: (rows, OVERSAMPLING * ROW) within the
        rows, and (rows, 2) just outside them (``_edge_matrix``)."""
        rows = windows.shape[0]
        if self._buffer.shape[0] < rows:
            self._buffer = np.empty((rows, self._buffer.shape[1]), dtype=np.float32)
        values = self._buffer[:rows]
        np.matmul(windows, _row_matrix(ROW), out=values)
        np.abs(values, out=values)
        edges = np.abs(windows @ _edge_matrix(ROW))
        return values, edges


def _refined_peaks(values: Float32Array, edges: Float32Array, group: int) -> Float32Array:
    """Per-group peak (rows, ROW // group) from ``_Scratch.values``: each group's
    largest value, refined by the parabola through it and its neighbours."""
    rows, width = values.shape
    per_group = OVERSAMPLING * group
    groups = ROW // group
    at = np.argmax(values.reshape(rows, groups, per_group), axis=2)
    at += per_group * np.arange(groups)  # column in values
    centre = np.take_along_axis(values, at, axis=1).astype(np.float64)
    left = np.take_along_axis(values, np.maximum(at - 1, 0), axis=1)
    left = np.where(at == 0, edges[:, :1], left)
    right = np.take_along_axis(values, np.minimum(at + 1, width - 1), axis=1)
    right = np.where(at == width - 1, edges[:, 1:], right)
    curvature = left - 2.0 * centre + right
    # Only at a local maximum (where the vertex lies within half a step of it); a group's
    # largest value at its edge, beside a larger one, is the next group's peak.
    bent = (curvature < 0.0) & (centre >= left) & (centre >= right)
    vertex = centre
    vertex[bent] -= (left[bent] - right[bent]) ** 2 / (8.0 * curvature[bent])
    peaks: Float32Array = vertex.astype(np.float32)
    return peaks


class _RowStream:
    """Streams (frames, channels) blocks into whole rows of ``ROW`` samples with their
    context (REACH samples either side), for a subclass's ``_rows``.

    Keeps the last samples it has not been able to interpolate yet (an interpolated
    value needs ``REACH`` samples after it), so blocks may be of any size; ``_end``
    treats what follows the stream as silence.
    """

    def __init__(self, channels: int) -> None:
        # Samples from REACH before the first not yet interpolated one, channel by
        # channel (each channel contiguous: the rows' windows are views of it).
        self._pending = np.zeros((channels, REACH), dtype=np.float32)
        self._frames = 0

    def push(self, block: FloatArray) -> None:
        if block.shape[0] == 0:
            return
        self._frames += block.shape[0]
        # One copy, transposing as it goes.
        self._pending = np.concatenate([self._pending, block.T], axis=1, dtype=np.float32)
        # Whole rows whose right-hand context has arrived.
        rows = (self._pending.shape[1] - 2 * REACH) // ROW
        if rows > 0:
            self._each_channel(self._pending[:, : rows * ROW + 2 * REACH], rows)
            self._pending = self._pending[:, rows * ROW :].copy()

    def _end(self) -> None:
        waiting = self._pending.shape[1] - REACH
        if waiting > 0:
            rows = -(-waiting // ROW)
            tail = np.zeros((self._pending.shape[0], rows * ROW + 2 * REACH), dtype=np.float32)
            tail[:, : self._pending.shape[1]] = self._pending
            self._each_channel(tail, rows)
        self._pending = self._pending[:, :0]

    def _each_channel(self, data: Float32Array, rows: int) -> None:
        """``data``: (channels, rows * ROW + 2 REACH), each channel's samples in a row."""
        for channel in data:
            self._rows(np.ascontiguousarray(channel), rows)

    def _rows(self, channel: Float32Array, rows: int) -> None:
        raise NotImplementedError


class _GroupStream(_RowStream):
    """A value per group of a stream (the maximum over its channels), as ``_group_values``
    gives it per row."""

    def __init__(self, channels: int, *, group: int = ROW) -> None:
        if group <= 0 or ROW % group:
            raise ValueError(f"group must divide {ROW}")
        super().__init__(channels)
        self._group = group
        self._parts: list[Float32Array] = []
        # Rows of the block under way, their values the maximum over its channels.
        self._found: Float32Array | None = None
        # Groups already handed over by ``take``.
        self._taken = 0

    def take(self) -> Float32Array:
        """Values of the groups measured so far, handed over and forgotten here: a caller
        that wants only the largest keeps memory flat however long the stream."""
        taken = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
        self._parts = []
        self._taken += taken.shape[0]
        return taken

    def finish(self) -> Float32Array:
        """Values of every group not taken yet (the last may be partial); the stream
        ends here."""
        self._end()
        peaks = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
        result: Float32Array = peaks[: -(-self._frames // self._group) - self._taken]
        return result

    def _each_channel(self, data: Float32Array, rows: int) -> None:
        self._found = np.zeros(rows * ROW // self._group, dtype=np.float32)
        super()._each_channel(data, rows)
        self._parts.append(self._found)
        self._found = None

    def _rows(self, channel: Float32Array, rows: int) -> None:
        if self._found is None:
            raise RuntimeError("rows arrive through _each_channel")
        values = self._group_values(channel, rows)
        np.maximum(self._found, values.reshape(-1), out=self._found)

    def _group_values(self, channel: Float32Array, rows: int) -> Float32Array:
        raise NotImplementedError


class TruePeakStream(_GroupStream):
    """True peak per group of a stream of (frames, channels) blocks pushed in order: the
    control signal of the true-peak limiter."""

    def __init__(self, channels: int, *, group: int = ROW) -> None:
        super().__init__(channels, group=group)
        self._scratch = _Scratch()

    def _group_values(self, channel: Float32Array, rows: int) -> Float32Array:
        values, edges = self._scratch.values(_windows(channel, rows))
        return _refined_peaks(values, edges, self._group)


class TruePeakBounds(_GroupStream):
    """An upper bound of ``TruePeakStream``'s peak per group, for about a fifth of its
    cost: the group's largest sample or value half-way between samples, raised by the
    most a band-limited signal can peak above those (``_HALF_SAMPLE_SCREEN``, 4 dB).
    A caller measures exactly (``group_peaks_of_windows``) only the rows whose bound
    matters."""

    def _group_values(self, channel: Float32Array, rows: int) -> Float32Array:
        coarse = _coarse_values(_windows(channel, rows))
        bounds = _row_max(coarse.reshape(-1, self._group))
        bounds *= np.float32(_HALF_SAMPLE_SCREEN)
        return bounds.reshape(rows, ROW // self._group)


def windows_at_rows(samples: FloatArray, rows: npt.NDArray[np.intp]) -> Float32Array:
    """(len(rows), ROW + 2 REACH, channels): the samples the rows ``rows`` of a stream of
    (frames, channels) ``samples`` draw on, zeros before and after it, as the stream
    meters read it."""
    frames = samples.shape[0]
    offsets = rows[:, None] * ROW - REACH + np.arange(ROW + 2 * REACH)[None, :]
    windows: Float32Array = samples[np.clip(offsets, 0, max(frames - 1, 0))].astype(np.float32)
    windows[(offsets < 0) | (offsets >= frames)] = 0.0
    return windows


def group_peaks_of_windows(windows: Float32Array, *, group: int = ROW) -> Float32Array:
    """``TruePeakStream``'s peaks (rows, ROW // group), the maximum over channels, of rows
    given by their (rows, ROW + 2 REACH, channels) ``windows_at_rows``."""
    if group <= 0 or ROW % group:
        raise ValueError(f"group must divide {ROW}")
    scratch = _Scratch()
    found = np.zeros((windows.shape[0], ROW // group), dtype=np.float32)
    for index in range(windows.shape[2]):
        channel = np.ascontiguousarray(windows[:, :, index])
        np.maximum(found, _refined_peaks(*scratch.values(channel), group), out=found)
    return found


def peaks_at_rows(samples: FloatArray, rows: npt.NDArray[np.intp]) -> Float32Array:
    """``TruePeakMeter``'s reading (the largest refined peak, the maximum over channels)
    of each of the rows ``rows`` of a stream of (frames, channels) ``samples``."""
    return group_peaks_of_windows(windows_at_rows(samples, rows))[:, 0]


class TruePeakMeter(_RowStream):
    """The true peak of a whole stream: the largest of ``TruePeakStream``'s peaks (per
    row of ``ROW`` samples), found without interpolating every row.

    Two screens pick the rows that may hold the peak: the bound from the samples each
    row draws on (rigorous), then the values half-way between samples (a band-limited
    signal's bound); only rows that pass both are interpolated 8x. On music a few
    percent of rows reach the last step: a third of the full meter's time or less.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self._scratch = _Scratch()
        self._peak = 0.0

    def finish(self) -> float:
        """The linear true peak of the whole stream; the stream ends here."""
        self._end()
        return self._peak

    def _rows(self, channel: Float32Array, rows: int) -> None:
        magnitude = np.abs(channel)
        span = rows * ROW
        # Each row's window is its ROW samples from its start plus 2 REACH (< ROW) more.
        starts = _row_max(magnitude[:span].reshape(rows, ROW))
        after = np.append(starts[1:], magnitude[span:].max(initial=0.0))
        reach = np.maximum(starts, after)
        # The rows' own samples are interpolated values (phase 0): the peak is at least
        # their largest.
        floor = max(self._peak, float(magnitude[REACH : REACH + span].max()))
        bound = reach_gain() * _REFINEMENT_GAIN
        candidates = np.flatnonzero(reach * np.float32(bound) >= floor)
        if candidates.shape[0] == 0:
            self._peak = floor
            return
        windows = _windows(channel, rows)[candidates]
        coarse = _row_max(_coarse_values(windows))
        floor = max(floor, float(coarse.max()))
        chosen = windows[coarse * np.float32(_HALF_SAMPLE_SCREEN) >= floor]
        exact = _refined_peaks(*self._scratch.values(chosen), ROW)
        self._peak = max(floor, float(exact.max(initial=0.0)))


def group_true_peaks(
    samples: FloatArray, *, group: int = ROW, block: int = BLOCK_FRAMES
) -> Float32Array:
    """Linear true peak of each ``group`` of frames of (frames, channels) ``samples``."""
    stream = TruePeakStream(samples.shape[1], group=group)
    for start in range(0, samples.shape[0], block):
        stream.push(samples[start : start + block])
    return stream.finish()


def true_peak(samples: FloatArray, *, block: int = BLOCK_FRAMES) -> float:
    """Linear true peak of (frames, channels) ``samples``."""
    meter = TruePeakMeter(samples.shape[1])
    for start in range(0, samples.shape[0], block):
        meter.push(samples[start : start + block])
    return meter.finish()


def to_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else -math.inf
