"""With ``limiter: "matchering"`` the engine is matchering (the fidelity mode).

At 44.1 kHz the stages are matchering's own: the residual measures 134-135 dB under
the result on these clips, float32 rounding; the test holds it to 120 dB, so any real
change to the algorithm fails it. A target at another rate is resampled to 44.1 kHz by
matchering and mastered there; this engine analyses it as resampled the same way
(``engine.resampler``) but EQs and limits it at its own rate, with the resampler's
band edge in its EQ: 48-60 dB measured, held to 40 dB. Its master is compared with
matchering's after an ideal (FFT) resampling to 44.1 kHz, which adds no band edge of
its own.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.signals import song
from mastering.options import Limiter
from tests.engine.conftest import engine_master, matchering_master, residual_db

pytestmark = pytest.mark.slow

CLIP_S = 30.0
RATE = 44_100
SAME_RATE_MIN_RESIDUAL_DB = 120.0
MIN_RESIDUAL_DB = 40.0
FIDELITY = Limiter.MATCHERING
STYLES = ["rock", "acoustic", "electronic", "mono", "quiet"]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return song("electronic", 22, RATE, CLIP_S)


@pytest.mark.parametrize("style", STYLES)
def test_matches_matchering_on_44k_clips(style: str, reference: np.ndarray) -> None:
    # Given a 30-second clip of a style and a loud reference
    target = song(style, 21, RATE, CLIP_S)
    # When both engines master it
    theirs = matchering_master(target, RATE, reference, RATE)
    ours, rate = engine_master(target, RATE, reference, RATE, limiter=FIDELITY)
    # Then the outputs agree to float32 rounding, sample for sample
    assert rate == RATE
    assert ours.shape == theirs.shape
    assert residual_db(ours, rate, theirs) >= SAME_RATE_MIN_RESIDUAL_DB


@pytest.mark.parametrize("target_rate", [48_000, 96_000])
@pytest.mark.parametrize("style", STYLES)
def test_matches_matchering_at_other_target_rates(
    style: str, target_rate: int, reference: np.ndarray
) -> None:
    # Given a clip at 48 or 96 kHz, which matchering resamples to 44.1 kHz
    target = song(style, 21, target_rate, CLIP_S)
    theirs = matchering_master(target, target_rate, reference, RATE)
    ours, rate = engine_master(target, target_rate, reference, RATE, limiter=FIDELITY)
    # Then the master stays at the target's rate and, brought to 44.1 kHz, agrees
    # with matchering's to 40 dB over the whole band
    assert rate == target_rate
    assert residual_db(ours, rate, theirs) >= MIN_RESIDUAL_DB


def test_follows_matchering_on_a_quiet_reference_and_a_48k_target() -> None:
    # Given a reference peaking well under full scale (matchering's amplitude
    # coefficient) and a target at 48 kHz
    reference = song("acoustic", 5, RATE, CLIP_S) * np.float32(0.25)
    target = song("rock", 6, 48_000, CLIP_S)
    theirs = matchering_master(target, 48_000, reference, RATE)
    ours, rate = engine_master(target, 48_000, reference, RATE, limiter=FIDELITY)
    # Then the 48 kHz master agrees with matchering's (the limiter works hard here and
    # sees 48 kHz samples, not matchering's 44.1 kHz ones: the largest difference left)
    assert rate == 48_000
    assert residual_db(ours, rate, theirs) >= MIN_RESIDUAL_DB
