"""The master comes back at the target's own rate, as long as the target."""

from __future__ import annotations

import numpy as np
import pytest

from tests.audio_factory import tone_mix
from tests.engine.conftest import engine_master


# 22 050 and 32 000 are resampled up by matchering; 44 056 Hz has no small period
# (analysed through the band-limiting filter at its own rate instead).
@pytest.mark.parametrize("rate", [22_050, 32_000, 44_056, 44_100, 48_000, 96_000])
def test_output_rate_and_length_equal_the_target(rate: int) -> None:
    target = tone_mix(6.0, rate, seed=1, peak_dbfs=-12.0)
    reference = tone_mix(6.0, 44_100, seed=2, peak_dbfs=-1.0)
    samples, out_rate = engine_master(target, rate, reference, 44_100)
    assert out_rate == rate
    assert samples.shape == (target.shape[0], 2)
    assert samples.dtype == np.float32
    assert np.all(np.isfinite(samples))
    assert 0.01 < float(np.max(np.abs(samples))) < 1.0


def test_mono_target_gives_identical_channels() -> None:
    target = tone_mix(5.0, 48_000, channels=1, seed=3, peak_dbfs=-10.0)
    reference = tone_mix(5.0, 44_100, seed=4, peak_dbfs=-1.0)
    samples, _ = engine_master(target, 48_000, reference, 44_100)
    assert samples.shape == (target.shape[0], 2)
    np.testing.assert_array_equal(samples[:, 0], samples[:, 1])
