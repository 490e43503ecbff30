"""Shared helpers for the engine tests: matchering's own stages as the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mastering.engine.analysis import analyze
from mastering.engine.master import MasterOptions, master
from mastering.engine.params import INTERNAL_RATE
from mastering.track import Track

Samples = npt.NDArray[np.floating]


def matchering_master(target: Samples, target_rate: int, reference: Samples, reference_rate: int):
    """matchering 2.0.6 on arrays (its check + stages.main): stereo float64 at 44.1 kHz."""
    import matchering
    from matchering.checker import check
    from matchering.stages import main

    matchering.log(lambda text: None)
    config = matchering.Config()
    target_checked, _ = check(target.astype(np.float64), target_rate, config, "target")
    reference_checked, _ = check(reference.astype(np.float64), reference_rate, config, "reference")
    result, _, _ = main(target_checked, reference_checked, config)
    return result


def engine_master(
    target: Samples, target_rate: int, reference: Samples, reference_rate: int, **options: Any
) -> tuple[Samples, int]:
    profile = analyze(Track(reference.astype(np.float32), reference_rate))
    result = master(
        Track(target.astype(np.float32), target_rate), profile, MasterOptions(**options)
    )
    return result.samples, result.sample_rate


def residual_db(
    ours: Samples, ours_rate: int, theirs: Samples, *, below_hz: float | None = None
) -> float:
    """Residual power of ours vs matchering's 44.1 kHz output, in dB below theirs
    (counting only frequencies under ``below_hz`` when given)."""
    if ours_rate != INTERNAL_RATE:
        # Ideal (FFT) resampling: matchering's output already carries its own resampler.
        from scipy.signal import resample

        frames = round(ours.shape[0] * INTERNAL_RATE / ours_rate)
        ours = resample(ours.astype(np.float64), frames, axis=0)
    frames = min(ours.shape[0], theirs.shape[0])
    residual = ours[:frames] - theirs[:frames]
    if below_hz is None:
        return float(-10 * np.log10(np.mean(residual**2) / np.mean(theirs[:frames] ** 2)))
    keep = np.fft.rfftfreq(frames, 1 / INTERNAL_RATE) < below_hz
    error = np.sum(np.abs(np.fft.rfft(residual, axis=0)[keep]) ** 2)
    signal = np.sum(np.abs(np.fft.rfft(theirs[:frames], axis=0)[keep]) ** 2)
    return float(-10 * np.log10(error / signal))


@pytest.fixture(scope="session")
def statsmodels_lowess():
    sm = pytest.importorskip("statsmodels.api")
    return sm.nonparametric.lowess
