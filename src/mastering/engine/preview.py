"""Previews: the loudest stretch of a track, faded, and an A/B pair at one loudness.

DESIGN "Previews and modes": the target's loudest 30 s (or all of it when shorter),
the same window for target and result, 1-s fades, and the target's excerpt brought to
the result's loudness so that switching between them compares tone, not level.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mastering.engine.dsp import FloatArray, fade_edges_in_place
from mastering.engine.loudness import CHANNEL_GAINS, KWeighting, LoudnessMeter
from mastering.engine.true_peak_limiter import limit_in_place

PREVIEW_S = 30.0
FADE_S = 1.0
# The window's start moves in steps this long; loudness is summed per step.
_STEP_S = 0.1
_BLOCK_FRAMES = 1 << 16

Float32Array = npt.NDArray[np.float32]


def loudest_window(samples: FloatArray, rate: int, length_s: float = PREVIEW_S) -> slice:
    """The frames of the ``length_s`` stretch with the most K-weighted energy.

    K-weighted (BS.1770) energy is what "loudest" means to a listener: a bass-heavy
    passage with a high sample peak is not necessarily the loudest one. The whole
    track when it is no longer than ``length_s``.
    """
    frames = int(samples.shape[0])
    length = min(frames, round(length_s * rate))
    if length >= frames:
        return slice(0, frames)
    step = max(1, round(_STEP_S * rate))
    energy = _step_energy(samples, rate, step)
    steps = max(1, length // step)
    running = np.concatenate([[0.0], np.cumsum(energy)])
    window_energy = running[steps:] - running[:-steps]
    start = int(np.argmax(window_energy)) * step
    start = min(start, frames - length)
    return slice(start, start + length)


def _step_energy(samples: FloatArray, rate: int, step: int) -> npt.NDArray[np.float64]:
    channels = int(samples.shape[1])
    weighting = KWeighting(rate, channels)
    gains = np.array(CHANNEL_GAINS[:channels], dtype=np.float64)
    sums: list[npt.NDArray[np.float64]] = []
    # Blocks are multiples of the step, so steps never straddle two blocks.
    block = max(step, (_BLOCK_FRAMES // step) * step)
    for start in range(0, samples.shape[0], block):
        squares = weighting.squares(np.ascontiguousarray(samples[start : start + block]))
        cuts = np.arange(0, squares.shape[0], step)
        sums.append(np.add.reduceat(squares, cuts, axis=0, dtype=np.float64) @ gains)
    return np.concatenate(sums) if sums else np.zeros(0)


def fade_in_place(samples: Float32Array, rate: int, fade_s: float = FADE_S) -> None:
    """Raised-cosine fade in and out, each ``fade_s`` long (a quarter of a short clip)."""
    fade_edges_in_place(samples, rate, fade_s)


def integrated_lufs(samples: FloatArray, rate: int) -> float | None:
    meter = LoudnessMeter(rate, channels=int(samples.shape[1]))
    for start in range(0, samples.shape[0], _BLOCK_FRAMES):
        meter.push(np.ascontiguousarray(samples[start : start + _BLOCK_FRAMES]))
    return meter.integrated()


def match_loudness_in_place(
    samples: Float32Array, rate: int, target_lufs: float, ceiling_dbtp: float
) -> float:
    """Bring ``samples`` to ``target_lufs`` and keep their true peak under the ceiling.

    Returns the gain applied in dB (0 when the loudness is undefined, e.g. silence).
    A quiet original raised to a loud master's level would clip; the limiter that
    keeps masters under their ceiling keeps the excerpt there too, which changes its
    peaks but not its tone.
    """
    measured = integrated_lufs(samples, rate)
    if measured is None:
        return 0.0
    gain_db = target_lufs - measured
    samples *= np.float32(10.0 ** (gain_db / 20.0))
    limit_in_place(samples, rate, ceiling_dbtp)
    return gain_db
