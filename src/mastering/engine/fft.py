"""Real FFTs for the engine: scipy's compiled FFTs in float32, on every core.

scipy's FFTs transform float32 in float32 (half the memory traffic of float64, and as
precise as the engine needs) and were measured 2.5-4x faster than numpy.fft on the
engine's batched transforms (numpy's are single-threaded and, for float32, three
times slower than its own float64 ones).

Why not simply ``import scipy.fft``: that import costs ~0.18 s a process, a tenth of a
3-minute job run as a process of its own (``mastering master``, the benchmark), and
almost none of it is the FFT: scipy.fft's array-API layer clones numpy's namespace
(which imports ``numpy.f2py`` and ``numpy.testing``) and its fftlog imports
``scipy.special``. The transforms themselves are one compiled module, what
``scipy.fft.rfft`` calls once it has checked its arguments: ``_pocketfft/pypocketfft``
up to scipy 1.17, ``_duccfft/pyduccfft`` (same calls) from 1.18, the one the Lambda
image's Python 3.12 gets. It loads in ~2 ms. ``load`` loads it from scipy's installed
files without executing scipy's packages, checks that it transforms as scipy.fft does,
and otherwise falls back to ``scipy.fft`` itself (``make image-check`` fails if the
image's scipy ends up there). CPython keeps one copy of such a compiled module: a
later ``import scipy.fft`` (pyloudnorm, matchering, the tests) gets the very same one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# The compiled module's normalisation codes: none (forward) and 1/n (inverse), as
# scipy.fft's defaults pass them.
_NO_SCALING = 0
_SCALE_BY_ONE_OVER_N = 2

_WORKERS: int | None = None


class _Transforms(Protocol):
    def rfft(self, x: npt.NDArray[Any], n: int | None, axis: int) -> npt.NDArray[Any]: ...

    def irfft(self, spectrum: npt.NDArray[Any], n: int, axis: int) -> npt.NDArray[Any]: ...


_TRANSFORMS: _Transforms | None = None


def _workers() -> int:
    """Every CPU this process may run on (what scipy's ``workers=-1`` would use)."""
    global _WORKERS
    if _WORKERS is None:
        try:
            _WORKERS = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            _WORKERS = os.cpu_count() or 1
    return _WORKERS


def _fit(x: npt.NDArray[Any], size: int, axis: int) -> npt.NDArray[Any]:
    """``x`` cut or zero-padded to ``size`` along the non-negative ``axis`` (scipy's
    ``n=``)."""
    have = x.shape[axis]
    if have >= size:
        return x[(slice(None),) * axis + (slice(0, size),)]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - have)
    return np.pad(x, widths)


def _as_transformable(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``x`` as the compiled module takes it, converted as scipy.fft's ``_asfarray``
    converts it: floats and complex values of single precision or more as they are (in
    native byte order), half precision to single, anything else to double."""
    kind, size = x.dtype.kind, x.dtype.itemsize
    if kind in "fc" and x.dtype.isnative and size >= (4 if kind == "f" else 8):
        return x
    if kind in "fc" and size >= (4 if kind == "f" else 8):
        return x.astype(x.dtype.newbyteorder("="))
    return np.asarray(x, dtype=np.float32 if kind == "f" and size == 2 else np.float64)


def _checked_axis(x: npt.NDArray[Any], axis: int) -> int:
    """``axis`` as a non-negative index; one out of range is refused (scipy.fft raises
    IndexError there; numpy's AxisError is both that and a ValueError), where the
    compiled module would wrap it round to another axis."""
    if not -x.ndim <= axis < x.ndim:
        raise np.exceptions.AxisError(axis, x.ndim)
    return axis % x.ndim


def _check_points(points: int) -> None:
    """Refused as scipy.fft refuses it: on no points the compiled module returns
    uninitialised memory."""
    if points < 1:
        raise ValueError(f"invalid number of data points ({points}) specified")


class _Compiled:
    """The compiled transforms scipy.fft wraps, called as scipy.fft calls them once it
    has checked and converted its arguments (checked and converted here alike)."""

    def __init__(self, module: ModuleType) -> None:
        self.name = module.__name__.rsplit(".", 1)[-1]
        self._r2c = module.r2c
        self._c2r = module.c2r

    def rfft(self, x: npt.NDArray[Any], n: int | None, axis: int) -> npt.NDArray[Any]:
        if np.iscomplexobj(x):
            raise TypeError("x must be a real sequence")
        x = _as_transformable(x)
        axis = _checked_axis(x, axis)
        _check_points(x.shape[axis] if n is None else n)
        if n is not None:
            x = _fit(x, n, axis)
        result: npt.NDArray[Any] = self._r2c(x, (axis,), True, _NO_SCALING, None, _workers())
        return result

    def irfft(self, spectrum: npt.NDArray[Any], n: int, axis: int) -> npt.NDArray[Any]:
        spectrum = _as_transformable(spectrum)
        if not np.iscomplexobj(spectrum):
            # As scipy.fft: real values are the real parts (in the same precision).
            spectrum = spectrum.astype(np.result_type(spectrum.dtype, np.complex64))
        axis = _checked_axis(spectrum, axis)
        _check_points(n)
        spectrum = _fit(spectrum, n // 2 + 1, axis)
        result: npt.NDArray[Any] = self._c2r(
            spectrum, (axis,), n, False, _SCALE_BY_ONE_OVER_N, None, _workers()
        )
        return result


class _ScipyFft:
    """``scipy.fft`` itself: the fallback."""

    def __init__(self) -> None:
        import scipy.fft

        self._module = scipy.fft

    def rfft(self, x: npt.NDArray[Any], n: int | None, axis: int) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = self._module.rfft(x, n=n, axis=axis, workers=_workers())
        return result

    def irfft(self, spectrum: npt.NDArray[Any], n: int, axis: int) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = self._module.irfft(spectrum, n=n, axis=axis, workers=_workers())
        return result


# Where scipy keeps its compiled FFTs, newest first: (folder under scipy/fft, module).
_COMPILED_FFTS = (("_duccfft", "pyduccfft"), ("_pocketfft", "pypocketfft"))


def _load_compiled() -> ModuleType | None:
    """scipy's compiled FFT module, loaded from its file without importing the packages
    around it; None when it is not where scipy keeps it."""
    scipy_spec = importlib.util.find_spec("scipy")  # finds scipy without importing it
    if scipy_spec is None or not scipy_spec.submodule_search_locations:
        return None
    fft_folder = Path(next(iter(scipy_spec.submodule_search_locations))) / "fft"
    for folder, name in _COMPILED_FFTS:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = fft_folder / folder / f"{name}{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location(f"scipy.fft.{folder}.{name}", path)
                if spec is None or spec.loader is None:
                    return None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    return None


def _usable(module: ModuleType | None) -> bool:
    """The module transforms as scipy.fft would (same signature, same values)."""
    if module is None:
        return False
    probe = np.arange(8, dtype=np.float32).reshape(2, 4)
    try:
        transforms = _Compiled(module)
        spectrum = transforms.rfft(probe, None, -1)
        back = transforms.irfft(spectrum, 4, -1)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        # RuntimeError: what the compiled module raises for arguments it does not take.
        return False
    return bool(
        spectrum.dtype == np.complex64
        and back.dtype == np.float32
        and np.allclose(spectrum[0], [6, -2 + 2j, -2], atol=1e-6)
        and np.allclose(back, probe, atol=1e-5)
    )


def _transforms() -> _Transforms:
    global _TRANSFORMS
    if _TRANSFORMS is None:
        try:
            module = _load_compiled()
        except (ImportError, OSError, ValueError, SystemError):
            # ValueError: find_spec on a scipy already imported without a spec;
            # SystemError: an extension module whose initialisation failed.
            module = None
        _TRANSFORMS = _Compiled(module) if module is not None and _usable(module) else _ScipyFft()
    return _TRANSFORMS


def load() -> None:
    """Load the transforms now (a worker does before it forks)."""
    _transforms()


def backend() -> str:
    """Which transforms run: scipy's compiled module loaded alone (``pyduccfft`` or
    ``pypocketfft``), or ``scipy.fft`` (the fallback)."""
    transforms = _transforms()
    return transforms.name if isinstance(transforms, _Compiled) else "scipy.fft"


def rfft(x: npt.NDArray[Any], *, axis: int, n: int | None = None) -> npt.NDArray[Any]:
    """``scipy.fft.rfft``: complex64 for float32 input. (Not through scipy.fft's
    backend dispatch: ``scipy.fft.set_backend`` and ``set_workers`` do not apply.)"""
    return _transforms().rfft(x, n, axis)


def irfft(spectrum: npt.NDArray[Any], *, n: int, axis: int) -> npt.NDArray[Any]:
    """``scipy.fft.irfft``: float32 for complex64 input."""
    return _transforms().irfft(spectrum, n, axis)
