"""The pipeline's checks on decoded audio, without whole-track temporaries.

Same rules, errors and messages as ``mastering.audio.measure.validate_for_mastering``
(too short, too long, digital silence); only the silence test reads the samples
block by block, because ``np.abs`` of an hour of float32 stereo is another 1.3 GB.
"""

from __future__ import annotations

import math

import numpy as np

from mastering.audio.decode import DecodedAudio
from mastering.audio.measure import format_duration
from mastering.engine.dsp import BLOCK_FRAMES, FloatArray
from mastering.errors import AudioTooLong, AudioTooShort, SilentAudio

# Dither and hum stay below -80 dBFS (measure.is_digital_silence's threshold).
SILENCE_DBFS = -80.0


def sample_peak(samples: FloatArray) -> float:
    """Largest absolute sample, scanned in blocks."""
    peak = 0.0
    for start in range(0, samples.shape[0], BLOCK_FRAMES):
        block = samples[start : start + BLOCK_FRAMES]
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
    return peak


def validate_decoded(
    audio: DecodedAudio, *, role: str, min_duration_s: float, max_duration_s: float
) -> None:
    duration = audio.duration_s
    if duration < min_duration_s:
        raise AudioTooShort(
            f"The {role} is {duration:.2f} seconds long; "
            f"it must be at least {format_duration(min_duration_s)}"
        )
    if duration > max_duration_s:
        raise AudioTooLong(f"The {role} is longer than the {format_duration(max_duration_s)} limit")
    peak = sample_peak(audio.samples)
    if peak <= 0.0 or 20.0 * math.log10(peak) < SILENCE_DBFS:
        raise SilentAudio(f"The {role} is silent")
