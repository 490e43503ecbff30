"""The engine sounds like matchering: residual at least 40 dB under the result."""

from __future__ import annotations

import numpy as np
import pytest

from bench.signals import song
from tests.engine.conftest import engine_master, matchering_master, residual_db

pytestmark = pytest.mark.slow

CLIP_S = 30.0
RATE = 44_100
MIN_RESIDUAL_DB = 40.0


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return song("electronic", 22, RATE, CLIP_S)


@pytest.mark.parametrize("style", ["rock", "acoustic", "electronic", "mono", "quiet"])
def test_matches_matchering_on_44k_clips(style: str, reference: np.ndarray) -> None:
    # Given a 30-second clip of a style and a loud reference
    target = song(style, 21, RATE, CLIP_S)
    # When both engines master it
    theirs = matchering_master(target, RATE, reference, RATE)
    ours, rate = engine_master(target, RATE, reference, RATE)
    # Then the outputs agree far below audibility, sample for sample
    assert rate == RATE
    assert ours.shape == theirs.shape
    assert residual_db(ours, rate, theirs) >= MIN_RESIDUAL_DB


def test_follows_matchering_on_a_quiet_reference_and_a_48k_target() -> None:
    # Given a reference peaking well under full scale (matchering's amplitude
    # coefficient) and a target at 48 kHz
    reference = song("acoustic", 5, RATE, CLIP_S) * np.float32(0.25)
    target = song("rock", 6, 48_000, CLIP_S)
    theirs = matchering_master(target, 48_000, reference, RATE)
    ours, rate = engine_master(target, 48_000, reference, RATE)
    # Then the 48 kHz master, compared at 44.1 kHz, agrees closely below 15 kHz; above,
    # matchering's EQ is shaped by its own resampler's band edge (see docs/engine.md),
    # which this engine does not reproduce exactly.
    assert rate == 48_000
    assert residual_db(ours, rate, theirs, below_hz=15_000.0) >= 35.0
    assert residual_db(ours, rate, theirs) >= 20.0
