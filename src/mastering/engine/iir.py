"""Recursive (IIR) filters in numpy alone: ``scipy.signal.lfilter`` without scipy.signal.

Importing ``scipy.signal`` costs about a second (it pulls in scipy.stats, optimize,
interpolate and parses hundreds of docstrings), a third of the engine's whole process
on a 3-minute track, for four tiny filters: the limiter's one-pole smoothers and the
loudness meter's K-weighting. So they are computed here, as matrix products.

A filter ``b(z) / a(z)`` of order ``d`` in scipy's transposed direct form II has a
state ``s`` of ``d`` values (``lfilter``'s ``zi``/``zf``). Over a chunk of ``L``
samples, outputs and the next state are linear in the chunk's inputs and its first
state::

    y = T x + Z s        T: L x L lower-triangular Toeplitz of the impulse response
    s' = F s + G x       F = A^L,  G: d x L

so every chunk's local part is one matrix product for the whole signal (BLAS, both
cores), and only the ``d``-value states need a sequential pass. That pass is done the
same way one level up (groups of 8 chunk states, then groups of 8 groups...: five
products for a 262 144-frame block), with no Python loop over chunks or groups. The
results equal ``lfilter``'s to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating]
Float64Array = npt.NDArray[np.float64]

# Samples per chunk: longer chunks cost more multiply-adds per sample (about 2 L),
# shorter ones more chunk states to scan.
_CHUNK = 32
# Steps per group in the scan of the chunk states: a group's product costs about
# ``_GROUP`` multiply-adds per state value, and each level of groups one more Python
# step (8: 4096 chunk states take four levels).
_GROUP = 8


class BlockFilter:
    """``lfilter`` (one section) or ``sosfilt`` (a cascade of sections) on
    (frames, channels) arrays, state carried between calls."""

    def __init__(
        self,
        sections: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
        *,
        chunk: int = _CHUNK,
        dtype: npt.DTypeLike = np.float64,
    ) -> None:
        # State space of the cascade: s' = A s + B x, y = C s + D x. Chaining the
        # sections' own small states keeps it as well conditioned as sosfilt (one
        # high-order polynomial would lose about six digits near the 38 Hz poles).
        a_, b_, c_, d_ = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
        for b, a in sections:
            a2, b2, c2, d2 = _section_state_space(b, a)
            n1, n2 = a_.shape[0], a2.shape[0]
            combined = np.zeros((n1 + n2, n1 + n2))
            combined[:n1, :n1] = a_
            combined[n1:, :n1] = np.outer(b2, c_)
            combined[n1:, n1:] = a2
            a_, b_ = combined, np.concatenate([b_, b2 * d_])
            c_, d_ = np.concatenate([d2 * c_, c2]), d2 * d_
        order = a_.shape[0]
        if order < 1:
            raise ValueError("BlockFilter needs a recursive filter (order >= 1)")
        powers = [np.eye(order)]
        for _ in range(chunk):
            powers.append(a_ @ powers[-1])
        self.order = order
        self._chunk = chunk
        self._dtype = np.dtype(dtype)
        self._powers = np.array(powers)  # A^0 .. A^L
        impulse = np.array([d_, *[c_ @ powers[k - 1] @ b_ for k in range(1, chunk)]])
        index = np.arange(chunk)
        lag = index[:, None] - index[None, :]
        toeplitz = np.where(lag >= 0, impulse[np.clip(lag, 0, None)], 0.0)
        # Column m of G: A^(L-1-m) B, the effect of input m on the next chunk's state.
        self._gather = np.stack([powers[chunk - 1 - m] @ b_ for m in range(chunk)], axis=1)
        self._toeplitz = toeplitz
        self._free = np.array([c_ @ powers[n] for n in range(chunk)])  # Z: L x d, C A^n
        self._drive = b_
        self._by_channels: dict[int, tuple[Array, Array, Array]] = {}
        self._by_level: dict[tuple[int, int], tuple[Float64Array, Float64Array]] = {}
        self._steps: list[list[Float64Array]] = []

    def _matrices(self, channels: int) -> tuple[Array, Array, Array]:
        """T, Z and G for chunks laid out as rows of (frames, channels), frames of all
        channels side by side (no transposing copies: kron with the identity), and
        states as rows of (order, channels): a chunk's output is its row times T plus
        its first state times Z; its push on the next chunk's state is its row times G.
        """
        if channels not in self._by_channels:
            eye = np.eye(channels)
            self._by_channels[channels] = (
                np.kron(self._toeplitz.T, eye).astype(self._dtype),
                np.kron(self._free.T, eye).astype(self._dtype),
                np.kron(self._gather.T, eye).astype(self._dtype),
            )
        return self._by_channels[channels]

    def zeros(self, channels: int) -> Float64Array:
        """An initial state of rest for ``channels`` channels: (order, channels)."""
        return np.zeros((self.order, channels))

    def step_response_state(self) -> Float64Array:
        """The state a unit step settles in (``scipy.signal.lfilter_zi``), (order,)."""
        eye = np.eye(self.order)
        steady: Float64Array = np.linalg.solve(eye - self._powers[1], self._drive)
        return steady

    def apply(
        self, x: Array, state: Float64Array, *, scratch: Scratch | None = None
    ) -> tuple[Array, Float64Array]:
        """Filter (frames, channels) ``x`` from ``state`` (order, channels); returns the
        output in the filter's dtype and the final state. ``scratch``, kept by a caller
        that filters block after block, saves allocating (and page-faulting) the
        working rows on every call."""
        frames, channels = x.shape
        length, order = self._chunk, self.order
        count = frames // length
        out = np.empty((frames, channels), dtype=self._dtype)
        # A state as a row: (order, channels) flattened.
        last = np.asarray(state, dtype=np.float64).reshape(order * channels)
        if count:
            samples, free, gather = self._matrices(channels)
            width = length * channels
            rows = np.asarray(x[: count * length], dtype=self._dtype).reshape(count, width)
            # The samples' share first: the first read of x from memory, under the
            # longest product.
            body = out[: count * length].reshape(count, width)
            np.matmul(rows, samples, out=body)
            starts = self._scan((rows @ gather).astype(np.float64), last, channels)
            # The starts' share in a reused buffer: a fresh one costs page faults.
            share = (scratch or Scratch()).rows(count, width, self._dtype)
            np.matmul(starts[:count].astype(self._dtype), free, out=share)
            body += share
            last = starts[count]
        rest = frames - count * length
        if rest:
            tail = np.asarray(x[count * length :], dtype=np.float64)  # (rest, ch)
            first = last.reshape(order, channels)
            out[count * length :] = self._toeplitz[:rest, :rest] @ tail + self._free[:rest] @ first
            last = self._powers[rest] @ first + self._gather[:, length - rest :] @ tail
        return out, last.reshape(order, channels).copy()

    def _scan(
        self, pushes: Float64Array, first: Float64Array, channels: int, level: int = 0
    ) -> Float64Array:
        """States at every chunk start, as rows: s[k+1] = s[k] F + pushes[k], s[0] =
        first, where F acts on a row of (order, channels) as A^(L * G^level) on each
        channel (one chunk at level 0, G chunks at level 1...).

        Within groups of ``_GROUP`` steps, the states from a zero start are one matrix
        product for all groups (block Toeplitz in powers of F); the groups' own starts
        are the same recurrence one level up (F^G, one step per group); then each
        state is start F^i + local. No Python loop runs per sample or per chunk.

        In float64 even for a float32 filter: the 38 Hz poles' powers have large
        entries that cancel, and float32 there moves the output by about 1e-4.
        """
        count, width = pushes.shape
        group = _GROUP
        groups = -(-count // group)
        within, spread = self._scan_matrices(channels, level)
        if count < groups * group:
            # Zero pushes after the last step only affect states after it.
            pushes = np.concatenate([pushes, np.zeros((groups * group - count, width))])
        local = pushes.reshape(groups, group * width) @ within
        # local[:, i*w:(i+1)*w] is the state i + 1 steps into the group from a zero start.
        if groups == 1:
            starts = first[None, :]
        else:
            starts = self._scan(local[:, -width:], first, channels, level + 1)
        states = np.empty((groups * group + 1, width))
        states[0] = first
        spreads = states[1:].reshape(groups, group * width)
        np.matmul(starts[:groups], spread, out=spreads)
        spreads += local
        return states[: count + 1]

    def _scan_matrices(self, channels: int, level: int) -> tuple[Float64Array, Float64Array]:
        """For ``_scan`` at ``level``, acting on rows of (order, channels):
        the zero-start states of a group from its pushes, and [F^1 ... F^G] side by
        side."""
        key = (channels, level)
        if key not in self._by_level:
            powers = self._step_powers(level)
            # F on a row: F's transpose on each channel.
            on_rows = [np.kron(power.T, np.eye(channels)) for power in powers]
            width = self.order * channels
            # Block (l, i): push l's share of the state i + 1 steps in, F^(i-l) for i >= l.
            within = np.zeros((_GROUP * width, _GROUP * width))
            for source in range(_GROUP):
                for target in range(source, _GROUP):
                    within[
                        source * width : (source + 1) * width, target * width : (target + 1) * width
                    ] = on_rows[target - source]
            spread = np.concatenate(on_rows[1:], axis=1)
            self._by_level[key] = (within, spread)
        return self._by_level[key]

    def _step_powers(self, level: int) -> list[Float64Array]:
        """F^0 ... F^G at ``level``, F = A^(L * G^level)."""
        while len(self._steps) <= level:
            step = self._powers[self._chunk] if not self._steps else self._steps[-1][-1]
            powers = [np.eye(self.order)]
            for _ in range(_GROUP):
                powers.append(step @ powers[-1])
            self._steps.append(powers)
        return self._steps[level]


class Scratch:
    """Working memory that ``BlockFilter.apply`` reuses from call to call."""

    def __init__(self) -> None:
        self._buffer: Array | None = None

    def rows(self, count: int, columns: int, dtype: npt.DTypeLike) -> Array:
        """A (count, columns) array of ``dtype``, contents undefined."""
        buffer = self._buffer
        if buffer is None or buffer.dtype != np.dtype(dtype) or buffer.size < count * columns:
            buffer = self._buffer = np.empty(count * columns, dtype=dtype)
        return buffer[: count * columns].reshape(count, columns)


def _section_state_space(
    b: npt.ArrayLike, a: npt.ArrayLike
) -> tuple[Float64Array, Float64Array, Float64Array, float]:
    """(A, B, C, D) of lfilter's transposed direct form II for one ``b / a``:
    ``y[n] = b0 x[n] + s0[n]``, ``s_i[n+1] = b_{i+1} x[n] - a_{i+1} y[n] + s_{i+1}[n]``
    (so the state is lfilter's ``zi``)."""
    b_ = np.atleast_1d(np.asarray(b, dtype=np.float64))
    a_ = np.atleast_1d(np.asarray(a, dtype=np.float64))
    if a_[0] == 0.0:
        raise ValueError("a[0] must not be zero")
    b_, a_ = b_ / a_[0], a_ / a_[0]
    order = max(a_.shape[0], b_.shape[0]) - 1
    b_ = np.pad(b_, (0, order + 1 - b_.shape[0]))
    a_ = np.pad(a_, (0, order + 1 - a_.shape[0]))
    transition = np.zeros((order, order))
    transition[:, 0] = -a_[1:]
    transition[np.arange(order - 1), np.arange(1, order)] = 1.0
    output = np.zeros(order)
    if order:
        output[0] = 1.0
    return transition, b_[1:] - a_[1:] * b_[0], output, float(b_[0])


@cache
def _cached(b: tuple[float, ...], a: tuple[float, ...]) -> BlockFilter:
    return BlockFilter([(b, a)])


def lfilter(
    b: npt.ArrayLike, a: npt.ArrayLike, x: Array, zi: Float64Array
) -> tuple[Float64Array, Float64Array]:
    """``scipy.signal.lfilter(b, a, x, zi=zi)`` for 1-D float64 ``x``."""
    design = _cached(tuple(np.ravel(b).tolist()), tuple(np.ravel(a).tolist()))
    y, state = design.apply(np.asarray(x, dtype=np.float64)[:, None], np.reshape(zi, (-1, 1)))
    return y[:, 0].astype(np.float64, copy=False), state[:, 0]


def lfilter_zi(b: npt.ArrayLike, a: npt.ArrayLike) -> Float64Array:
    """``scipy.signal.lfilter_zi``: the state of rest for a unit step input."""
    return _cached(tuple(np.ravel(b).tolist()), tuple(np.ravel(a).tolist())).step_response_state()


def butter_lowpass_first_order(cutoff_hz: float, rate: float) -> tuple[Float64Array, Float64Array]:
    """``scipy.signal.butter(1, cutoff_hz, fs=rate)``: bilinear transform of the
    pre-warped one-pole analog low-pass, computed as scipy does (zpk, then b, a)."""
    warped = 4.0 * math.tan(math.pi * (2.0 * cutoff_hz / rate) / 2.0)
    # Analog pole -warped, gain warped; bilinear with fs2 = 2 * fs = 4 (scipy's fs = 2).
    pole = (4.0 - warped) / (4.0 + warped)
    gain = warped / (4.0 + warped)
    return np.array([gain, gain]), np.array([1.0, -pole])
