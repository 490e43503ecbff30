"""Cubic spline interpolation in numpy alone (``interp1d(x, y, "cubic")``).

matchering resamples its matching curve onto a log-frequency grid and back with
``scipy.interpolate.interp1d(..., "cubic")``: the not-a-knot cubic spline through the
points. Importing ``scipy.interpolate`` costs about 0.4 s per process, for two
interpolations of a few thousand points, so the spline is computed here, the way
``scipy.interpolate.CubicSpline`` does (first derivatives from a tridiagonal system),
and evaluated as piecewise cubics. It is the same spline as scipy's, to rounding
(~1e-15 relative; the tests compare).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class CubicSpline:
    """Not-a-knot cubic spline through (x, y), x strictly increasing, at least 4 points.

    Calling it evaluates the spline; outside [x[0], x[-1]] the end pieces extend (as
    ``interp1d(..., fill_value="extrapolate")``)."""

    def __init__(self, x: npt.ArrayLike, y: npt.ArrayLike) -> None:
        xs = np.asarray(x, dtype=np.float64)
        ys = np.asarray(y, dtype=np.float64)
        n = xs.shape[0]
        if ys.shape != xs.shape or n < 4:
            raise ValueError("CubicSpline needs x and y of the same length, at least 4")
        dx = np.diff(xs)
        if np.any(dx <= 0.0):
            raise ValueError("x must be strictly increasing")
        slope = np.diff(ys) / dx
        # Row i: lower[i] s[i-1] + diag[i] s[i] + upper[i] s[i+1] = rhs[i] (scipy's
        # CubicSpline system; the not-a-knot ends keep it tridiagonal).
        lower = np.zeros(n)
        diag = np.empty(n)
        upper = np.zeros(n)
        rhs = np.empty(n)
        diag[1:-1] = 2.0 * (dx[:-1] + dx[1:])
        lower[1:-1] = dx[1:]
        upper[1:-1] = dx[:-1]
        rhs[1:-1] = 3.0 * (dx[1:] * slope[:-1] + dx[:-1] * slope[1:])
        span = xs[2] - xs[0]
        diag[0], upper[0] = dx[1], span
        rhs[0] = ((dx[0] + 2.0 * span) * dx[1] * slope[0] + dx[0] ** 2 * slope[1]) / span
        span = xs[-1] - xs[-3]
        diag[-1], lower[-1] = dx[-2], span
        rhs[-1] = (dx[-1] ** 2 * slope[-2] + (2.0 * span + dx[-1]) * dx[-2] * slope[-1]) / span
        derivative = _solve_tridiagonal(lower, diag, upper, rhs)
        t = (derivative[:-1] + derivative[1:] - 2.0 * slope) / dx
        self._x = xs
        # Piece i: c0 (u)^3 + c1 (u)^2 + c2 u + c3 with u = x - x[i] (scipy's PPoly form).
        self._coefficients = np.stack(
            [t / dx, (slope - derivative[:-1]) / dx - t, derivative[:-1], ys[:-1]]
        )

    def __call__(self, at: npt.ArrayLike) -> FloatArray:
        points = np.asarray(at, dtype=np.float64)
        piece = np.clip(np.searchsorted(self._x, points, side="right") - 1, 0, len(self._x) - 2)
        u = points - self._x[piece]
        c = self._coefficients[:, piece]
        value: FloatArray = ((c[0] * u + c[1]) * u + c[2]) * u + c[3]
        return value


def _solve_tridiagonal(
    lower: FloatArray, diag: FloatArray, upper: FloatArray, rhs: FloatArray
) -> FloatArray:
    """Thomas algorithm (plain floats: a few thousand rows, sequential by nature)."""
    n = diag.shape[0]
    low, mid, up, right = lower.tolist(), diag.tolist(), upper.tolist(), rhs.tolist()
    for i in range(1, n):
        factor = low[i] / mid[i - 1]
        mid[i] -= factor * up[i - 1]
        right[i] -= factor * right[i - 1]
    solution = [0.0] * n
    solution[-1] = right[-1] / mid[-1]
    for i in range(n - 2, -1, -1):
        solution[i] = (right[i] - up[i] * solution[i + 1]) / mid[i]
    return np.array(solution)
