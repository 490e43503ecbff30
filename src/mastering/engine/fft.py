"""Real FFTs for the engine: scipy's pocketfft, without importing ``scipy.fft``.

``import scipy.fft`` costs about 0.2 s (it brings scipy's array-API layer), a tenth
of a 3-minute job's whole process, while the transforms themselves are one compiled
module, ``scipy/fft/_pocketfft/pypocketfft``, which imports nothing. So that module is
loaded straight from scipy's installed files, under a name of its own, and called as
``scipy.fft.rfft``/``irfft`` call it (same results, bit for bit; a test compares).
Should the file ever be missing or refuse to load (another scipy layout), the
functions fall back to ``scipy.fft`` itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# The last part must be the library's own name (its init function is PyInit_pypocketfft).
_MODULE_NAME = "mastering.engine.fft.pypocketfft"
# scipy.fft's default "backward" normalisation: none forward, 1/n backward.
_NO_SCALING = 0
_ONE_OVER_N = 2


def _threads() -> int:
    """What ``workers=-1`` means to scipy: every CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def _pocketfft() -> ModuleType | None:
    try:
        spec = importlib.util.find_spec("scipy")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "fft" / "_pocketfft"
        library = next(folder.glob("pypocketfft*.so"), None)
        if library is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(_MODULE_NAME, str(library))
        module_spec = importlib.util.spec_from_file_location(
            _MODULE_NAME, str(library), loader=loader
        )
        if module_spec is None:
            return None
        module = importlib.util.module_from_spec(module_spec)
        loader.exec_module(module)
        if not (hasattr(module, "r2c") and hasattr(module, "c2r")):
            return None
        return module
    except (ImportError, OSError) as exc:
        logger.info("pocketfft not loadable directly (%s); using scipy.fft", exc)
        return None


def using_pocketfft_directly() -> bool:
    return _pocketfft() is not None


def rfft(x: npt.NDArray[Any], *, axis: int, n: int | None = None) -> npt.NDArray[Any]:
    """``scipy.fft.rfft(x, n=n, axis=axis, workers=-1)``."""
    module = _pocketfft()
    if module is None:
        import scipy.fft

        result: npt.NDArray[Any] = scipy.fft.rfft(x, n=n, axis=axis, workers=-1)
        return result
    if n is not None and n != x.shape[axis]:
        # Zero-padded (or cut) to n along the axis, as scipy does before transforming.
        shape = list(x.shape)
        shape[axis] = n
        padded = np.zeros(shape, dtype=x.dtype)
        keep = [slice(None)] * x.ndim
        keep[axis] = slice(0, min(n, x.shape[axis]))
        padded[tuple(keep)] = x[tuple(keep)]
        x = padded
    out: npt.NDArray[Any] = module.r2c(
        x, axes=(axis,), forward=True, inorm=_NO_SCALING, out=None, nthreads=_threads()
    )
    return out


def irfft(spectrum: npt.NDArray[Any], *, n: int, axis: int) -> npt.NDArray[Any]:
    """``scipy.fft.irfft(spectrum, n=n, axis=axis, workers=-1)`` for ``n`` up to
    twice the spectrum's length minus two (the engine's only use)."""
    module = _pocketfft()
    if module is None or n // 2 + 1 > spectrum.shape[axis]:
        import scipy.fft

        result: npt.NDArray[Any] = scipy.fft.irfft(spectrum, n=n, axis=axis, workers=-1)
        return result
    if n // 2 + 1 < spectrum.shape[axis]:
        keep = [slice(None)] * spectrum.ndim
        keep[axis] = slice(0, n // 2 + 1)
        spectrum = spectrum[tuple(keep)]
    out: npt.NDArray[Any] = module.c2r(
        spectrum,
        axes=(axis,),
        lastsize=n,
        forward=False,
        inorm=_ONE_OVER_N,
        out=None,
        nthreads=_threads(),
    )
    return out
