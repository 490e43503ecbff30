"""Our LOWESS equals statsmodels' (frac=0.0375, it=0, delta=0.001) on real curves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.interpolate import interp1d

from mastering.engine.analysis import analyze, analyze_levels
from mastering.engine.eq import _linear_grid, _log_grid, matching_ratio
from mastering.engine.lowess import lowess
from mastering.engine.params import LOWESS_DELTA, LOWESS_FRAC
from mastering.track import Track
from tests.audio_factory import tone_mix


def _matchering_log_curve(seed: int) -> np.ndarray:
    """The curve matchering smooths: a target/reference ratio on the log grid."""
    reference = tone_mix(20.0, 44_100, seed=seed, peak_dbfs=-1.0)
    target = tone_mix(20.0, 44_100, seed=seed + 1, peak_dbfs=-12.0)
    profile = analyze(Track(reference, 44_100))
    levels = analyze_levels(target, 44_100, role="target")
    ratio = matching_ratio(np.asarray(profile.mid_spectrum), levels.mid_spectrum)
    return interp1d(_linear_grid(), ratio, "cubic")(_log_grid())


@pytest.mark.parametrize("seed", [1, 5])
def test_equals_statsmodels_on_matching_curves(
    seed: int, statsmodels_lowess: Callable[..., Any]
) -> None:
    curve = _matchering_log_curve(seed)
    x = np.linspace(0, 1, curve.shape[0])
    ours = lowess(curve, x, frac=LOWESS_FRAC, delta=LOWESS_DELTA)
    theirs = statsmodels_lowess(curve, x, frac=LOWESS_FRAC, it=0, delta=LOWESS_DELTA)[:, 1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12 * np.max(np.abs(theirs)))


@pytest.mark.parametrize("n", [50, 333, 1001, 8193])
@pytest.mark.parametrize("delta", [0.0, 0.001, 0.05])
def test_equals_statsmodels_on_random_walks(
    n: int, delta: float, statsmodels_lowess: Callable[..., Any]
) -> None:
    rng = np.random.default_rng(n)
    y = np.cumsum(rng.standard_normal(n)) + 10.0
    x = np.linspace(0, 1, n)
    ours = lowess(y, x, frac=LOWESS_FRAC, delta=delta)
    theirs = statsmodels_lowess(y, x, frac=LOWESS_FRAC, it=0, delta=delta)[:, 1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
