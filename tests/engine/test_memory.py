"""Memory does not grow with the track: the engine works in blocks, in place."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mastering.engine.analysis import analyze
from mastering.engine.master import MasterOptions, master
from mastering.track import Track
from tests.audio_factory import tone_mix

pytestmark = pytest.mark.slow
RATE = 44_100


def _tile(seconds: float) -> np.ndarray:
    # Long inputs are cheap to build: one minute of music repeated, gently varied.
    minute = tone_mix(60.0, RATE, seed=11, peak_dbfs=-10.0)
    reps = int(seconds // 60)
    gains = np.linspace(0.7, 1.0, reps, dtype=np.float32)
    return np.concatenate([minute * g for g in gains])


def _peak_working_memory(samples: np.ndarray) -> int:
    """Peak bytes allocated while mastering in place, beyond the track itself."""
    reference = analyze(Track(tone_mix(30.0, RATE, seed=12, peak_dbfs=-1.0), RATE))
    target = Track(samples, RATE)
    tracemalloc.start()
    try:
        result = master(target, reference, MasterOptions(in_place=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.samples is samples  # written over the target: no second copy
    return peak


def test_working_memory_is_the_same_for_2_and_6_minutes() -> None:
    two = _peak_working_memory(_tile(120.0))
    six = _peak_working_memory(_tile(360.0))
    assert six / two < 1.5
    assert six < 120 * 2**20  # a few blocks, not the 63 MB track
