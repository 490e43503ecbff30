"""Real FFTs for the engine: ``scipy.fft`` in float32, on every core.

scipy.fft transforms float32 in float32 (half the memory traffic of float64, and as
precise as the engine needs) and was measured 2.5-4x faster than numpy.fft on the
engine's batched transforms (numpy's are single-threaded and slower on float32). The
module is imported lazily (``load``, about 0.2 s) so that importing the engine's other
modules stays cheap; the master function loads it before forking its worker.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy.typing as npt

_WORKERS: int | None = None


def _workers() -> int:
    """Every CPU this process may run on (what scipy's ``workers=-1`` would use)."""
    global _WORKERS
    if _WORKERS is None:
        try:
            _WORKERS = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            _WORKERS = os.cpu_count() or 1
    return _WORKERS


def load() -> ModuleType:
    import scipy.fft as module

    loaded: ModuleType = module
    return loaded


def rfft(x: npt.NDArray[Any], *, axis: int, n: int | None = None) -> npt.NDArray[Any]:
    """``scipy.fft.rfft``: complex64 for float32 input."""
    result: npt.NDArray[Any] = load().rfft(x, n=n, axis=axis, workers=_workers())
    return result


def irfft(spectrum: npt.NDArray[Any], *, n: int, axis: int) -> npt.NDArray[Any]:
    """``scipy.fft.irfft``: float32 for complex64 input."""
    result: npt.NDArray[Any] = load().irfft(spectrum, n=n, axis=axis, workers=_workers())
    return result
