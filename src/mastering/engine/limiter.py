"""matchering's "Hyrax" brickwall limiter, streamed block by block.

matchering builds the gain envelope over the whole track at once, in float64:

1. hard-clip gain ``g = 1 - 1 / max(|x| / threshold, 1)`` (0 where no limiting);
2. attack: a centred running max over ``2 * odd(attack) - 1`` samples, then a
   one-pole low-pass run forwards and backwards (``filtfilt``, odd-padded);
3. hold/release: a trailing running max over ``hold`` samples of (2), a one-pole
   7 Hz low-pass of that, and a very slow one-pole low-pass of their max;
4. gain = ``1 - max(g, attack, release)``.

Everything is causal except the centred max (``odd(attack) - 1`` samples ahead) and
the backward pass of (2), whose one-pole response has decayed below 1e-27 after
``32 * attack`` samples. So each block needs only that much look-ahead, a few dozen
samples of look-behind, and the filters' states: the envelope equals matchering's
to float64 rounding while memory stays O(block). Times scale with the rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mastering.engine.dsp import Float64Array, sliding_max
from mastering.engine.iir import butter_lowpass_first_order, lfilter, lfilter_zi
from mastering.engine.params import (
    LIMITER_ATTACK_FILTER_COEFFICIENT,
    LIMITER_ATTACK_MS,
    LIMITER_HOLD_FILTER_HZ,
    LIMITER_HOLD_FILTER_ORDER,
    LIMITER_HOLD_MS,
    LIMITER_RELEASE_FILTER_COEFFICIENT,
    LIMITER_RELEASE_FILTER_ORDER,
    LIMITER_RELEASE_MS,
    THRESHOLD,
)

# Look-ahead of the backward attack pass, in attack lengths: exp(-2 * 32) < 1e-27.
_LOOKAHEAD_ATTACKS = 32
# filtfilt's default odd padding: 3 * max(len(a), len(b)) samples each side.
_FILTFILT_PAD = 6
# np.isclose(rectified, 1.0) defaults: matchering skips the limiter when all are close.
_ISCLOSE_TOLERANCE = 1e-8 + 1e-5

GainSource = Callable[[int, int], Float64Array]


@dataclass(frozen=True)
class LimiterDesign:
    attack: int
    attack_half_window: int
    hold: int
    attack_b: Float64Array
    attack_a: Float64Array
    attack_zi: Float64Array
    hold_b: Float64Array
    hold_a: Float64Array
    release_b: Float64Array
    release_a: Float64Array
    lookahead: int


def _ms_to_samples(ms: float, rate: int) -> int:
    return int(rate * ms * 1e-3)


def design_limiter(rate: int) -> LimiterDesign:
    attack = _ms_to_samples(LIMITER_ATTACK_MS, rate)
    odd_attack = attack if attack & 1 else attack + 1
    coefficient = math.exp(LIMITER_ATTACK_FILTER_COEFFICIENT / attack)
    attack_b, attack_a = np.array([1.0 - coefficient]), np.array([1.0, -coefficient])
    # matchering's butter(1, ...) filters; numpy-only designs (see engine.iir).
    if LIMITER_HOLD_FILTER_ORDER != 1 or LIMITER_RELEASE_FILTER_ORDER != 1:
        raise NotImplementedError("only first-order hold and release filters are designed")
    hold_b, hold_a = butter_lowpass_first_order(LIMITER_HOLD_FILTER_HZ, rate)
    release_b, release_a = butter_lowpass_first_order(
        LIMITER_RELEASE_FILTER_COEFFICIENT / LIMITER_RELEASE_MS, rate
    )
    return LimiterDesign(
        attack=attack,
        attack_half_window=odd_attack - 1,
        hold=_ms_to_samples(LIMITER_HOLD_MS, rate),
        attack_b=attack_b,
        attack_a=attack_a,
        attack_zi=lfilter_zi(attack_b, attack_a),
        hold_b=hold_b,
        hold_a=hold_a,
        release_b=release_b,
        release_a=release_a,
        lookahead=_LOOKAHEAD_ATTACKS * attack,
    )


def hard_clip_gain(rectified: Float64Array) -> Float64Array:
    """1 - 1 / (max(|x|, threshold) / threshold): the gain reduction a clipper needs."""
    np.maximum(rectified, THRESHOLD, out=rectified)
    rectified /= THRESHOLD
    gain: Float64Array = 1.0 - 1.0 / rectified
    return gain


def limiter_needed(peak: float) -> bool:
    """matchering returns the input untouched when every rectified value is ~1."""
    return max(peak, THRESHOLD) / THRESHOLD - 1.0 > _ISCLOSE_TOLERANCE


class _GainCache:
    """The hard-clip gain over a sliding range: read ahead of the writes only once."""

    def __init__(self, source: GainSource) -> None:
        self._source = source
        self._start = 0
        self._values = np.zeros(0)

    def get(self, start: int, stop: int) -> Float64Array:
        end = self._start + self._values.shape[0]
        if stop > end:
            self._values = np.concatenate([self._values, self._source(end, stop)])
        if start > self._start:
            self._values = self._values[start - self._start :]
            self._start = start
        return self._values[start - self._start : stop - self._start]


def _attack_slided(
    cache: _GainCache, start: int, stop: int, frames: int, half: int
) -> Float64Array:
    """Centred running max over 2 * half + 1 samples on [start, stop), with
    scipy.ndimage's "reflect" edges at the track's ends (matchering's
    maximum_filter1d)."""
    lo, hi = max(0, start - half), min(frames, stop + half)
    values = cache.get(lo, hi)
    head = values[:half][::-1] if start - half < 0 else values[:0]
    tail = values[values.shape[0] - half :][::-1] if stop + half > frames else values[:0]
    extended = np.concatenate([head, values, tail])
    offset = start - (lo - head.shape[0])
    # Every window needed lies inside ``extended``: the edges were reflected above.
    return sliding_max(extended, 2 * half + 1)[offset - half : offset - half + stop - start]


def _trailing_max(values: Float64Array, window: int, count: int) -> Float64Array:
    """max(values[n - window + 1 .. n]) for the last ``count`` n; values >= 0, so
    missing history (the track's start) is zero-padded, as matchering pads."""
    missing = window - 1 + count - values.shape[0]
    if missing > 0:
        values = np.concatenate([np.zeros(missing), values])
    return sliding_max(values, window)[:count]


def gain_envelope(
    source: GainSource, frames: int, design: LimiterDesign, block: int
) -> Iterator[tuple[int, int, Float64Array]]:
    """Yield (start, stop, gain) for consecutive blocks of the track.

    ``source(a, b)`` returns the hard-clip gain of frames [a, b); it is only ever
    asked for frames past every block yielded so far, so the caller may overwrite a
    block's samples as soon as its gain arrives.
    """
    cache = _GainCache(source)
    half, hold = design.attack_half_window, design.hold
    b, a = design.attack_b, design.attack_a
    forward_state = np.zeros(1)
    hold_state = np.zeros(1)
    release_state = np.zeros(1)
    for start in range(0, frames, block):
        stop = min(start + block, frames)
        ahead = min(frames, stop + design.lookahead)
        first = max(0, start - (hold - 1))
        slided = _attack_slided(cache, first, ahead, frames, half)
        own = slided[start - first :]
        if start == 0:
            # filtfilt's odd extension before the first sample sets the initial state.
            pad = 2.0 * own[0] - own[_FILTFILT_PAD:0:-1]
            _, forward_state = lfilter(b, a, pad, zi=design.attack_zi * pad[0])
        forward, forward_state = lfilter(b, a, own[: stop - start], zi=forward_state)
        future, end_state = own[stop - start :], forward_state
        if future.shape[0]:
            # (scipy's lfilter returns a garbage state for an empty input.)
            future, end_state = lfilter(b, a, future, zi=forward_state)
        backward_input = np.concatenate([forward, future])
        backward_state = np.zeros(1)
        if ahead == frames:
            # The track's end is in view: run filtfilt's odd extension there exactly.
            pad = 2.0 * slided[-1] - slided[-2 : -(_FILTFILT_PAD + 2) : -1]
            padded, _ = lfilter(b, a, pad, zi=end_state)
            backward_input = np.concatenate([backward_input, padded])
            backward_state = design.attack_zi * padded[-1]
        backward, _ = lfilter(b, a, backward_input[::-1], zi=backward_state)
        attack = backward[::-1][: stop - start]

        held = _trailing_max(slided[: stop - first], hold, stop - start)
        hold_out, hold_state = lfilter(design.hold_b, design.hold_a, held, zi=hold_state)
        release_out, release_state = lfilter(
            design.release_b, design.release_a, np.maximum(held, hold_out), zi=release_state
        )
        reduction = np.maximum(cache.get(start, stop), attack)
        np.maximum(reduction, hold_out, out=reduction)
        np.maximum(reduction, release_out, out=reduction)
        yield start, stop, 1.0 - reduction
