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
same way one level up (groups of chunks), leaving a Python loop over a few hundred
groups. The results equal ``lfilter``'s to rounding.
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
# Chunk states per group in the scan of the states.
_GROUP = 64


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
        self._by_group: dict[tuple[int, int], tuple[Float64Array, Float64Array]] = {}

    def _matrices(self, channels: int) -> tuple[Array, Array, Array]:
        """T, G and Z acting on chunks laid out as (frames, channels) rows: frames of all
        channels side by side, so no transposing copies (kron with the identity)."""
        if channels not in self._by_channels:
            eye = np.eye(channels)
            self._by_channels[channels] = (
                np.kron(self._toeplitz.T, eye).astype(self._dtype),
                np.kron(self._gather.T, eye).astype(self._dtype),
                np.kron(self._free.T, eye).astype(self._dtype),
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

    def apply(self, x: Array, state: Float64Array) -> tuple[Array, Float64Array]:
        """Filter (frames, channels) ``x`` from ``state`` (order, channels); returns the
        output in the filter's dtype and the final state."""
        frames, channels = x.shape
        length = self._chunk
        count = frames // length
        out = np.empty((frames, channels), dtype=self._dtype)
        states = np.asarray(state, dtype=np.float64).T  # (channels, order)
        if count:
            outputs, pushes_of, free_of = self._matrices(channels)
            rows = np.asarray(x[: count * length], dtype=self._dtype).reshape(count, -1)
            pushes = (rows @ pushes_of).reshape(count, self.order, channels)
            starts = self._scan(pushes.transpose(0, 2, 1).astype(np.float64), states)
            # starts: (count + 1, channels, order); row k is chunk k's first state.
            body = out[: count * length].reshape(count, -1)
            np.matmul(rows, outputs, out=body)
            free = starts[:count].transpose(0, 2, 1).reshape(count, -1).astype(self._dtype)
            body += free @ free_of
            states = starts[count]
        rest = frames - count * length
        if rest:
            tail = np.asarray(x[count * length :], dtype=np.float64)  # (rest, ch)
            out[count * length :] = (self._toeplitz[:rest, :rest] @ tail) + (
                self._free[:rest] @ states.T
            )
            states = states @ self._powers[rest].T + (self._gather[:, length - rest :] @ tail).T
        return out, np.ascontiguousarray(states.T)

    def _scan(self, pushes: Float64Array, first: Float64Array, level: int = 0) -> Float64Array:
        """States at every chunk start: s[k+1] = F s[k] + pushes[k], s[0] = first,
        where F = A^(L * G^level) (one chunk at level 0, G chunks at level 1...).

        Within groups of ``_GROUP`` steps, the states from a zero start are one matrix
        product for all groups (block Toeplitz in powers of F); the groups' own starts
        are the same recurrence one level up (F^G, one step per group); then each
        state is F^i start + local. No Python loop runs per sample or per chunk.
        """
        count, channels, order = pushes.shape
        group = min(_GROUP, count)
        groups = -(-count // group)
        within, spread_t = self._scan_matrices(level, group)
        padded = np.zeros((groups * group, channels, order))
        padded[:count] = pushes
        # Rows: one group of one channel, its pushes side by side: (groups * ch, G * d).
        rows = padded.reshape(groups, group, channels, order).transpose(0, 2, 1, 3)
        local = rows.reshape(groups * channels, group * order) @ within
        # local[:, i*d:(i+1)*d] is the state i steps into the group from a zero start.
        ends = local[:, group * order :].reshape(groups, channels, order)
        if groups == 1:
            starts = np.stack([first, first @ self._leap(level, group) + ends[0]])
        else:
            starts = self._scan(ends, first, level + 1)
        spread = starts[:groups].reshape(groups * channels, order) @ spread_t
        spread += local[:, : group * order]
        by_group = spread.reshape(groups, channels, group, order).transpose(0, 2, 1, 3)
        flat = by_group.reshape(groups * group, channels, order)
        if count < flat.shape[0]:
            # The zero padding after the last step only affects states after it.
            return flat[: count + 1]
        return np.concatenate([flat, starts[groups:]])

    def _step(self, level: int) -> Float64Array:
        """F at ``level``: A^(L * G^level)."""
        step: Float64Array = self._powers[self._chunk]
        for _ in range(level):
            step = np.linalg.matrix_power(step, _GROUP)
        return step

    def _leap(self, level: int, group: int) -> Float64Array:
        """(F^group)^T at ``level``."""
        leap: Float64Array = np.linalg.matrix_power(self._step(level), group).T
        return leap

    def _scan_matrices(self, level: int, group: int) -> tuple[Float64Array, Float64Array]:
        """For ``_scan``, in row-vector form: the zero-start states of a group from its
        pushes, and [F^0 ... F^(group-1)]^T side by side."""
        key = (level, group)
        if key not in self._by_group:
            order = self.order
            step = self._step(level)
            powers = [np.eye(order)]
            for _ in range(group):
                powers.append(step @ powers[-1])
            transposed = np.array([p.T for p in powers])  # (group + 1, d, d)
            # Block (l, i): push l's share of state i, F^(i-1-l) for l < i, else 0.
            source, target = np.arange(group)[:, None], np.arange(group + 1)[None, :]
            lag = target - 1 - source
            blocks = np.where((lag >= 0)[:, :, None, None], transposed[np.clip(lag, 0, None)], 0.0)
            within = blocks.transpose(0, 2, 1, 3).reshape(group * order, (group + 1) * order)
            spread = np.concatenate(list(transposed[:group]), axis=1)
            self._by_group[key] = (within, spread)
        return self._by_group[key]


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
