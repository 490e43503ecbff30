"""LOWESS without statsmodels: the one smoother matchering needs, vectorised.

matchering smooths its matching curve with ``statsmodels.api.nonparametric.lowess``
(``it=0``: no robustness iterations), and importing statsmodels costs 1.8 s. This is
the same algorithm as statsmodels' Cython ``_smoothers_lowess`` for sorted, distinct x:
a local linear regression at each fitted point over its ``int(frac * n)`` nearest
neighbours with tricube weights, skipping points within ``delta`` of the last fit and
interpolating them linearly. Which points are fitted and each fit's neighbourhood
depend only on x, so they are found first and all regressions then run at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# statsmodels' guards: the fraction is rounded with this slack, a weight counts as
# non-zero above 1e-12, and the weighted x variance never goes below 1e-12.
_FRAC_SLACK = 1e-10
_NONZERO_WEIGHT = 1e-12
_MIN_SQDEV = 1e-12


def lowess(y: FloatArray, x: FloatArray, *, frac: float, delta: float) -> FloatArray:
    """Smoothed y at every x (x sorted ascending without ties), like statsmodels'
    ``lowess(y, x, frac=frac, it=0, delta=delta)[:, 1]``."""
    n = x.shape[0]
    if y.shape != x.shape or n < 2:
        raise ValueError("lowess needs x and y of the same length, at least 2")
    if not 0.0 <= frac <= 1.0:
        raise ValueError("lowess frac must be in [0, 1]")
    k = min(max(int(frac * n + _FRAC_SLACK), 2), n)
    fitted, lefts = _fit_plan(x, k, delta)
    fits = _local_linear_fits(x, y, fitted, lefts, k)
    # Points between two fits are linear interpolations of them (statsmodels' delta).
    return np.interp(x, x[fitted], fits)


def _fit_plan(x: FloatArray, k: int, delta: float) -> tuple[npt.NDArray[np.intp], list[int]]:
    """Indices statsmodels fits at, and the left end of each one's k-point window."""
    n = x.shape[0]
    xs = x.tolist()  # plain floats: this loop runs n times in Python
    fitted: list[int] = []
    lefts: list[int] = []
    i, left = 0, 0
    while True:
        xval = xs[i]
        # Slide the window right while its right neighbour is closer than its left end.
        while left + k < n and xval > (xs[left] + xs[left + k]) / 2.0:
            left += 1
        fitted.append(i)
        lefts.append(left)
        if i >= n - 1:
            break
        # The next fit is the last point within delta (at least the next point).
        cutpoint = xval + delta
        last = i + 1
        while last < n and xs[last] <= cutpoint:
            last += 1
        # statsmodels' scan stops on the last index when nothing lies beyond delta.
        i = max(min(last, n - 1) - 1, i + 1)
    return np.asarray(fitted, dtype=np.intp), lefts


def _local_linear_fits(
    x: FloatArray, y: FloatArray, fitted: npt.NDArray[np.intp], lefts: list[int], k: int
) -> FloatArray:
    windows = np.asarray(lefts, dtype=np.intp)[:, None] + np.arange(k)
    xw, yw = x[windows], y[windows]
    xval = x[fitted][:, None]
    radius = np.maximum(xval[:, 0] - xw[:, 0], xw[:, -1] - xval[:, 0])[:, None]
    weights = (1.0 - (np.abs(xw - xval) / radius) ** 3) ** 3
    enough = np.count_nonzero(weights > _NONZERO_WEIGHT, axis=1) >= 2
    weights /= weights.sum(axis=1, keepdims=True)
    mean_x = (weights * xw).sum(axis=1, keepdims=True)
    sqdev = np.maximum((weights * (xw - mean_x) ** 2).sum(axis=1, keepdims=True), _MIN_SQDEV)
    leverage = weights * (1.0 + (xval - mean_x) * (xw - mean_x) / sqdev)
    fits: FloatArray = (leverage * yw).sum(axis=1)
    # Too few weighted points for a regression: statsmodels keeps the observation.
    return np.where(enough, fits, y[fitted])
