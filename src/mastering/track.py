"""A track in memory: float32 samples at a sample rate.

What decoding produces, the engine masters and the encoders write; numpy only, so
both ``audio/`` (I/O) and ``engine/`` (DSP) can share it without knowing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Scanned this many frames at a time: np.abs or np.isfinite of a whole hour of
# float32 stereo would be another 1.3 GB.
_SCAN_FRAMES = 1 << 18


@dataclass(frozen=True)
class Track:
    samples: npt.NDArray[np.float32]  # (frames, channels), C-contiguous
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.sample_rate <= 0:
            raise ValueError("a Track needs (frames, channels) samples and a positive rate")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def peak(self) -> float:
        """The largest absolute sample (linear); 0.0 for no samples, NaN or infinity if
        a sample is."""
        return sample_peak(self.samples)

    def is_finite(self) -> bool:
        """True when no sample is NaN or infinite."""
        return all(
            bool(np.isfinite(self.samples[start : start + _SCAN_FRAMES]).all())
            for start in range(0, self.frames, _SCAN_FRAMES)
        )


def sample_peak(samples: npt.NDArray[np.floating]) -> float:
    """The largest absolute value of (frames, channels) ``samples``, scanned in blocks:
    NaN if a sample is NaN, infinity if one is infinite (the scan stops there)."""
    peak = 0.0
    for start in range(0, samples.shape[0], _SCAN_FRAMES):
        block = samples[start : start + _SCAN_FRAMES]
        if block.size:
            # max and -min read the block twice but allocate nothing (np.abs's copy
            # costs more); both are NaN if a sample is, and an infinity shows in one.
            block_peak = max(float(block.max()), -float(block.min()))
            if not math.isfinite(block_peak):
                return block_peak
            peak = max(peak, block_peak)
    return peak
