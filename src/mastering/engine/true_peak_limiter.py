"""A look-ahead true-peak limiter, and the gain that lands a master at a loudness.

The default last stage of a master (``limiter: "true_peak"``). Unlike matchering's
limiter, which keeps *samples* under full scale and lets the peaks between them
(what a DAC or an MP3 decoder reconstructs) overshoot by up to 3 dB, this one keeps
the *true* peak (``engine.true_peak``, 4x oversampled) under a ceiling.

How the gain is made, per control group of ``control_group(rate)`` samples (~0.7 ms):

1. the reduction each group needs, in dB: its true peak, times the make-up gain,
   above the ceiling (0 where it is under);
2. held: the maximum over the group's neighbourhood, from ``hold`` back to the
   ``lookahead`` ahead, so the gain is down before a peak arrives and stays down
   between peaks that are close together (the half-period of a bass note: no
   distortion from a gain that follows the waveform);
3. released: an exponential return towards no reduction (``release``), in dB;
4. smoothed: two running averages over the look-ahead, so the gain falls in an
   S-curve rather than a step (no clicks).

Each step only ever raises the reduction above what (1) asked for at every group that
(2) covers, so every sample's gain is at or under what its peak needs: the averages
in (4) take only values that (2) and (3) raised to at least (1) there. Between groups
the gain is interpolated linearly from knots that are the smaller gain of the two
groups they join, so no sample gets more than its group allows.

Because all of this works on one value per group, it is cheap to evaluate many times:
``plan`` searches for the make-up gain whose limited result has the asked loudness,
predicting the loudness of each candidate from per-group K-weighted power (``LoudnessModel``),
calibrated against the exact meter. It stops short of a loudness that would need the
limiter to work harder than ``MAX_LOUDNESS_LOSS_LU`` / ``MAX_REDUCTION_DB``: louder
than that is a wrecked track, not a master, and the job says so in a warning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mastering.engine.dsp import BLOCK_FRAMES, Float32Array, Float64Array, FloatArray, sliding_max
from mastering.engine.loudness import block_edges, gated_loudness
from mastering.engine.true_peak import METER_TOLERANCE_DB, ROW, group_true_peaks

# A limiter that must take more than this much loudness away (the loudness of the
# gain alone minus the loudness after limiting), or pull a peak down by more than
# MAX_REDUCTION_DB, audibly squashes the track: the target loudness is then given up.
MAX_LOUDNESS_LOSS_LU = 5.0
MAX_REDUCTION_DB = 12.0
# The limiter aims this far under the ceiling: other meters' tolerance (see
# ``true_peak.METER_TOLERANCE_DB``), and a few hundredths of a dB that the gain's own
# movement between samples and 16-bit dither can add.
SAFETY_MARGIN_DB = METER_TOLERANCE_DB + 0.05
# How close the predicted loudness must come to the target.
LOUDNESS_TOLERANCE_LU = 0.01
# The loudness search's upper bracket: the gain alone plus the most loudness the limiter
# may take away, plus this much room for the prediction.
_SEARCH_HEADROOM_LU = 1.0
_MAX_SEARCH_STEPS = 40
# Below this a reduction is nothing (keeps logarithms finite).
_NO_REDUCTION_DB = 1e-9


@dataclass(frozen=True)
class LimiterTiming:
    """The limiter's time constants, in milliseconds."""

    lookahead_ms: float = 2.0
    hold_ms: float = 8.0
    release_ms: float = 80.0


DEFAULT_TIMING = LimiterTiming()


def control_group(rate: int) -> int:
    """Samples per control group: about 0.7 ms, a divisor of the true-peak row."""
    group = 8
    while group < ROW and group * 2 <= rate * 0.0007 * 1.5:
        group *= 2
    return group


def _groups(ms: float, rate: int, group: int) -> int:
    return max(1, math.ceil(ms * 1e-3 * rate / group))


# Groups processed at a time when evaluating the limiter: its working memory stays a few
# MB however long the track.
_CHUNK_GROUPS = 1 << 16


@dataclass(frozen=True)
class _Shape:
    """The limiter's time constants in control groups."""

    hold: int
    ahead: int
    first_box: int
    second_box: int
    decay: float  # release per group

    @classmethod
    def of(cls, rate: int, group: int, timing: LimiterTiming) -> _Shape:
        total = _groups(timing.lookahead_ms, rate, group)
        first_box = max(1, total // 2)
        second_box = max(1, total - first_box)
        return cls(
            hold=_groups(timing.hold_ms, rate, group),
            ahead=first_box + second_box - 2,
            first_box=first_box,
            second_box=second_box,
            decay=math.exp(-group / (timing.release_ms * 1e-3 * rate)),
        )


def reduction_chunks(
    peaks_db: Float32Array,
    gain_db: float,
    ceiling_db: float,
    *,
    rate: int,
    group: int,
    timing: LimiterTiming = DEFAULT_TIMING,
) -> Iterator[tuple[int, Float64Array]]:
    """The limiter's gain reduction per group in dB (>= 0), as (first group, values)
    chunks in order, for peaks at unit gain ``peaks_db`` raised by ``gain_db`` and held
    under ``ceiling_db``.

    Written causally: ``held[i]`` is the maximum of what groups ``i - hold - ahead ..
    i`` need, released and smoothed up to ``i``; group ``k``'s reduction is that value
    at ``i = k + ahead``, so it looks ``ahead`` groups into the future and remembers
    ``hold`` groups of the past. State (the last needs, the release, the running sums)
    carries from one chunk to the next.
    """
    count = peaks_db.shape[0]
    shape = _Shape.of(rate, group, timing)
    window = shape.hold + shape.ahead + 1
    history = np.zeros(window - 1)
    released_before = 0.0
    first_tail = np.zeros(shape.first_box - 1)
    second_tail = np.zeros(shape.second_box - 1)
    offset = gain_db - ceiling_db
    for first in range(0, count + shape.ahead, _CHUNK_GROUPS):
        last = min(first + _CHUNK_GROUPS, count + shape.ahead)
        needed = np.zeros(last - first)
        real = min(last, count)
        if real > first:
            needed[: real - first] = np.maximum(peaks_db[first:real] + offset, 0.0)
        extended = np.concatenate([history, needed])
        history = extended[extended.shape[0] - (window - 1) :]
        held = sliding_max(extended, window)
        released = _release(held, shape.decay, released_before)
        released_before = float(released[-1])
        smoothed_once, first_tail = _running_mean(released, shape.first_box, first_tail)
        smoothed, second_tail = _running_mean(smoothed_once, shape.second_box, second_tail)
        # Output group k = i - ahead, for i in [first, last).
        lo, hi = max(first - shape.ahead, 0), min(last - shape.ahead, count)
        if hi > lo:
            yield lo, smoothed[lo + shape.ahead - first : hi + shape.ahead - first]


def reduction_db(
    peaks_db: Float32Array,
    gain_db: float,
    ceiling_db: float,
    *,
    rate: int,
    group: int,
    timing: LimiterTiming = DEFAULT_TIMING,
) -> Float64Array:
    """``reduction_chunks`` in one array."""
    reduction = np.zeros(peaks_db.shape[0])
    for first, values in reduction_chunks(
        peaks_db, gain_db, ceiling_db, rate=rate, group=group, timing=timing
    ):
        reduction[first : first + values.shape[0]] = values
    return reduction


def _release(held: Float64Array, decay: float, before: float) -> Float64Array:
    """r[k] = max(held[k], r[k - 1] * decay), r[-1] = ``before``: a peak's reduction
    decays exponentially.

    As max over j <= k of held[j] * decay^(k - j), computed with a cumulative maximum
    in the log domain (no loop over groups)."""
    steps = np.arange(1, held.shape[0] + 1, dtype=np.float64) * math.log(decay)
    with np.errstate(divide="ignore"):
        logs = np.log(np.maximum(held, _NO_REDUCTION_DB)) - steps
    start = math.log(max(before, _NO_REDUCTION_DB))
    released: Float64Array = np.exp(np.maximum(np.maximum.accumulate(logs), start) + steps)
    released[released <= _NO_REDUCTION_DB] = 0.0
    return released


def _running_mean(
    values: Float64Array, width: int, before: Float64Array
) -> tuple[Float64Array, Float64Array]:
    """Mean of values[k - width + 1 .. k], the ``width - 1`` values ``before`` preceding
    the chunk; returns the means and the chunk's last ``width - 1`` values."""
    if width <= 1:
        return values, before
    joined = np.concatenate([before, values])
    cumulative = np.concatenate([[0.0], np.cumsum(joined)])
    mean: Float64Array = (cumulative[width:] - cumulative[:-width]) / width
    return mean, joined[joined.shape[0] - (width - 1) :]


def gain_curve(knots: Float32Array, start: int, stop: int, group: int) -> Float32Array:
    """The per-sample gain of frames [start, stop), ``start`` a multiple of ``group``:
    linear between the knots at the group boundaries."""
    first = start // group
    count = -(-(stop - start) // group)
    left = knots[first : first + count]
    right = knots[first + 1 : first + count + 1]
    ramp = np.arange(group, dtype=np.float32) / np.float32(group)
    curve = left[:, None] + (right - left)[:, None] * ramp[None, :]
    out: Float32Array = curve.reshape(-1)[: stop - start]
    return out


@dataclass(frozen=True)
class SignalStats:
    """What limiting a signal needs of it, at unit gain, per control group."""

    rate: int
    frames: int
    group: int
    peaks_db: Float32Array  # true peak of each group, max over channels
    # K-weighted squares of each group, summed over channels with BS.1770's weights
    # (``None`` when only a ceiling is wanted, not a loudness).
    powers: Float32Array | None
    loudness: float | None  # exact integrated loudness (LUFS) at unit gain


class LoudnessModel:
    """Integrated loudness of the limited signal, predicted from per-group power.

    Each group's K-weighted energy is scaled by the square of the limiter's gain over
    it (K-weighting and a slowly moving gain commute to well under 0.1 dB) and summed
    into BS.1770's gating blocks; what the prediction at unit gain misses of the exact
    meter (groups straddling block edges) is added back as a constant.
    """

    def __init__(self, stats: SignalStats) -> None:
        if stats.powers is None or stats.loudness is None:
            raise ValueError("a loudness model needs powers and the measured loudness")
        self._powers = stats.powers
        starts, stops = block_edges(stats.rate, stats.frames)
        edges = np.sort(np.concatenate([[0, stats.frames], starts, stops]))
        # Unique by hand: np.unique imports numpy.ma (10 ms a process) to rule out a
        # masked array.
        edges = edges[np.concatenate([[True], edges[1:] != edges[:-1]])]
        group_starts = np.arange(stats.powers.shape[0], dtype=np.int64) * stats.group
        self._segment = (np.searchsorted(edges, group_starts, side="right") - 1).astype(np.int32)
        self.segments = int(edges.shape[0])
        self._starts = np.searchsorted(edges, starts)
        self._stops = np.searchsorted(edges, stops)
        self._scale = 1.0 / (0.4 * stats.rate)
        unity = self.empty()
        for first in range(0, self._powers.shape[0], _CHUNK_GROUPS):
            ones = np.ones(min(_CHUNK_GROUPS, self._powers.shape[0] - first))
            self.add(unity, first, ones)
        unlimited = self._gated(unity)
        self._offset = 0.0 if unlimited is None else stats.loudness - unlimited

    def empty(self) -> Float64Array:
        return np.zeros(self.segments)

    def add(self, segments: Float64Array, first: int, gain_squared: Float64Array) -> None:
        """Add groups ``first ..`` at these squared limiter gains into ``segments``."""
        last = first + gain_squared.shape[0]
        segments += np.bincount(
            self._segment[first:last],
            weights=self._powers[first:last] * gain_squared,
            minlength=self.segments,
        )

    def loudness(self, segments: Float64Array, gain_db: float) -> float | None:
        """Predicted LUFS of the summed ``segments`` after a make-up gain of ``gain_db``."""
        predicted = self._gated(segments)
        return None if predicted is None else predicted + self._offset + gain_db

    def _gated(self, segments: Float64Array) -> float | None:
        cumulative = np.concatenate([[0.0], np.cumsum(segments)])
        energy = (cumulative[self._stops] - cumulative[self._starts]) * self._scale
        return gated_loudness(energy)


@dataclass(frozen=True)
class LimiterPlan:
    gain_db: float  # make-up gain before the limiter
    knots: Float32Array  # the limiter's gain at each group boundary
    group: int
    predicted_lufs: float | None
    loss_lu: float  # loudness the limiter takes away
    max_reduction_db: float
    reached: bool  # False when the loudness was given up to spare the track


@dataclass(frozen=True)
class _Candidate:
    gain_db: float
    predicted_lufs: float | None
    loss_lu: float
    max_reduction_db: float


def _evaluate(
    stats: SignalStats,
    gain_db: float,
    ceiling_db: float,
    model: LoudnessModel | None,
    knots: Float32Array | None = None,
) -> _Candidate:
    """Run the limiter's control signal at ``gain_db`` once, chunk by chunk: its largest
    reduction, the predicted loudness (with a model), and the knots (into ``knots``)."""
    segments = model.empty() if model is not None else None
    largest = 0.0
    previous: float | None = None
    for first, reduction in reduction_chunks(
        stats.peaks_db, gain_db, ceiling_db, rate=stats.rate, group=stats.group
    ):
        largest = max(largest, float(reduction.max(initial=0.0)))
        gains = 10.0 ** (reduction / -20.0)
        if model is not None and segments is not None:
            model.add(segments, first, gains * gains)
        if knots is not None:
            # Each knot the smaller gain of the two groups it joins: the gain
            # interpolated between knots never exceeds a group's own.
            before = np.concatenate([[gains[0] if previous is None else previous], gains[:-1]])
            knots[first : first + gains.shape[0]] = np.minimum(before, gains)
            previous = float(gains[-1])
    if knots is not None:
        knots[-1] = 1.0 if previous is None else previous
    predicted = None
    if model is not None and segments is not None:
        predicted = model.loudness(segments, gain_db)
    unlimited = (stats.loudness or 0.0) + gain_db
    return _Candidate(
        gain_db=gain_db,
        predicted_lufs=predicted,
        loss_lu=0.0 if predicted is None else max(0.0, unlimited - predicted),
        max_reduction_db=largest,
    )


def _plan(
    stats: SignalStats, chosen: _Candidate, ceiling_db: float, *, reached: bool
) -> LimiterPlan:
    knots = np.ones(stats.peaks_db.shape[0] + 1, dtype=np.float32)
    _evaluate(stats, chosen.gain_db, ceiling_db, None, knots)
    return LimiterPlan(
        gain_db=chosen.gain_db,
        knots=knots,
        group=stats.group,
        predicted_lufs=chosen.predicted_lufs,
        loss_lu=chosen.loss_lu,
        max_reduction_db=chosen.max_reduction_db,
        reached=reached,
    )


def plan_for_ceiling(
    stats: SignalStats,
    ceiling_db: float,
    gain_db: float = 0.0,
    *,
    margin_db: float = SAFETY_MARGIN_DB,
) -> LimiterPlan:
    """Only keep peaks ``margin_db`` under the ceiling, at a given make-up gain."""
    internal = ceiling_db - margin_db
    return _plan(stats, _evaluate(stats, gain_db, internal, None), internal, reached=True)


def plan_for_loudness(
    stats: SignalStats,
    target_lufs: float,
    ceiling_db: float,
    *,
    max_loss_lu: float = MAX_LOUDNESS_LOSS_LU,
    max_reduction_db: float = MAX_REDUCTION_DB,
) -> LimiterPlan:
    """The make-up gain and limiting that land at ``target_lufs`` under ``ceiling_db``,
    or as close as the limits on limiting allow (``reached`` False)."""
    if stats.loudness is None or not math.isfinite(target_lufs):
        return plan_for_ceiling(stats, ceiling_db)
    model = LoudnessModel(stats)
    internal = ceiling_db - SAFETY_MARGIN_DB

    def evaluate(gain_db: float) -> _Candidate:
        return _evaluate(stats, gain_db, internal, model)

    def miss(candidate: _Candidate) -> float:
        predicted = candidate.predicted_lufs
        return -math.inf if predicted is None else predicted - target_lufs

    def acceptable(candidate: _Candidate) -> bool:
        return candidate.loss_lu <= max_loss_lu and candidate.max_reduction_db <= max_reduction_db

    low = evaluate(target_lufs - stats.loudness)
    if miss(low) >= -LOUDNESS_TOLERANCE_LU:
        best = low  # no limiting needed, or so little that the gain alone lands it
    else:
        # The loudness rises with the gain, by less than the gain once the limiter
        # works: the answer lies between the gain alone and that plus the most
        # loudness the limiter may take away (plus room for the prediction).
        high = evaluate(low.gain_db + max_loss_lu + _SEARCH_HEADROOM_LU)
        best = _solve(evaluate, miss, low, high) if miss(high) > 0.0 else high
    if acceptable(best) and abs(miss(best)) <= 2 * LOUDNESS_TOLERANCE_LU:
        return _plan(stats, best, internal, reached=True)
    # Too loud for this track under this ceiling: the loudest acceptable gain, between
    # one that needs no limiting at all and the first unacceptable one.
    if acceptable(low):
        lower, upper = low, best
    else:
        lower = evaluate(internal - float(stats.peaks_db.max(initial=internal)))
        upper = low
    for _ in range(_MAX_SEARCH_STEPS):
        if upper.gain_db - lower.gain_db < 0.01:
            break
        middle = evaluate((lower.gain_db + upper.gain_db) / 2.0)
        if acceptable(middle):
            lower = middle
        else:
            upper = middle
    return _plan(stats, lower, internal, reached=False)


def limiting_threshold_db(
    stats: SignalStats,
    target_lufs: float,
    ceiling_db: float,
    *,
    max_loss_lu: float = MAX_LOUDNESS_LOSS_LU,
) -> float:
    """The lowest peak at unit gain (dB) the limiter can act on while
    ``plan_for_loudness(stats, target_lufs, ceiling_db)`` searches: the ceiling it aims
    at less the largest make-up gain it tries. A group whose peak is only known to lie
    under this needs no exact reading: at every gain tried it is not limited, so an
    upper bound of its peak gives the very plan its exact peak would."""
    internal = ceiling_db - SAFETY_MARGIN_DB
    if stats.loudness is None or not math.isfinite(target_lufs):
        return internal  # plan_for_ceiling: no make-up gain
    largest_gain = target_lufs - stats.loudness + max_loss_lu + _SEARCH_HEADROOM_LU
    return internal - max(largest_gain, 0.0)


def gain_threshold_db(ceiling_db: float, gain_db: float) -> float:
    """The lowest peak at unit gain (dB) the limiter acts on at make-up gains up to
    ``gain_db``: a plan whose gain is at most this needs exact peaks only above it."""
    return ceiling_db - SAFETY_MARGIN_DB - max(gain_db, 0.0)


def _solve(
    evaluate: Callable[[float], _Candidate],
    miss: Callable[[_Candidate], float],
    low: _Candidate,
    high: _Candidate,
) -> _Candidate:
    """The gain whose predicted loudness misses the target by nothing (Illinois
    regula falsi between ``low`` (too quiet) and ``high`` (too loud))."""
    low_miss, high_miss = miss(low), miss(high)
    side = 0
    best = high
    for _ in range(_MAX_SEARCH_STEPS):
        gain = (low.gain_db * high_miss - high.gain_db * low_miss) / (high_miss - low_miss)
        candidate = evaluate(gain)
        candidate_miss = miss(candidate)
        best = candidate
        if abs(candidate_miss) <= LOUDNESS_TOLERANCE_LU:
            break
        if candidate_miss < 0.0:
            low, low_miss = candidate, candidate_miss
            if side == -1:
                high_miss /= 2.0
            side = -1
        else:
            high, high_miss = candidate, candidate_miss
            if side == 1:
                low_miss /= 2.0
            side = 1
    return best


def apply_block(
    left: FloatArray, right: FloatArray, start: int, limiter: LimiterPlan, out: Float32Array
) -> None:
    """Write the limited frames [start, start + len) of a left/right pair into ``out``
    (frames, 2): make-up gain times the limiter's gain curve."""
    curve = gain_curve(limiter.knots, start, start + left.shape[0], limiter.group)
    curve *= np.float32(10.0 ** (limiter.gain_db / 20.0))
    np.multiply(left, curve, out=out[:, 0])
    np.multiply(right, curve, out=out[:, 1])


def ceiling_stats(samples: Float32Array, rate: int) -> SignalStats:
    """True peaks per control group of (frames, channels) ``samples``, for a ceiling only."""
    group = control_group(rate)
    peaks = group_true_peaks(samples, group=group)
    return SignalStats(
        rate=rate,
        frames=samples.shape[0],
        group=group,
        peaks_db=to_db_array(peaks),
        powers=None,
        loudness=None,
    )


def limit_in_place(
    samples: Float32Array,
    rate: int,
    ceiling_db: float,
    *,
    margin_db: float = SAFETY_MARGIN_DB,
    block: int = BLOCK_FRAMES,
) -> LimiterPlan:
    """Hold the true peak of (frames, 2) ``samples`` ``margin_db`` under ``ceiling_db``,
    in place."""
    stats = ceiling_stats(samples, rate)
    plan = plan_for_ceiling(stats, ceiling_db, margin_db=margin_db)
    if plan.max_reduction_db <= 0.0:
        return plan
    for start in range(0, samples.shape[0], block):
        part = samples[start : start + block]
        curve = gain_curve(plan.knots, start, start + part.shape[0], plan.group)
        part *= curve[:, None]
    return plan


def to_db_array(linear: npt.NDArray[np.floating]) -> Float32Array:
    with np.errstate(divide="ignore"):
        values = np.log10(linear.astype(np.float32))
    values *= np.float32(20.0)
    result: Float32Array = np.maximum(values, np.float32(-400.0))
    return result
