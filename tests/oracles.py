"""Meters nobody here wrote, for asserting what a listener would measure.

- ``ffmpeg_meter``: ffmpeg's ``ebur128=peak=true`` on a file as ffmpeg decodes it:
  integrated loudness, loudness range and true peak. Read from the filter's frame
  metadata (three decimals) rather than its summary (one decimal).
- ``pyloudnorm_lufs``: pyloudnorm's BS.1770 integrated loudness of an array.
- ``reference_true_peak``: the peak of a 32x interpolation with a long filter
  (scipy), a near-continuous reading to judge 4x/8x meters by.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mastering.audio.ffmpeg import find_ffmpeg


@dataclass(frozen=True)
class FfmpegReading:
    lufs: float
    lra: float
    true_peak_dbtp: float


def ffmpeg_meter(path: Path) -> FfmpegReading:
    """What ``ffmpeg -i PATH -af ebur128=peak=true -f null -`` measures."""
    done = subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true:metadata=1,ametadata=print:file=-",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    peaks = [float(v) for v in re.findall(r"lavfi\.r128\.true_peak=([-\d.]+)", done.stdout)]
    lufs = re.findall(r"lavfi\.r128\.I=([-\d.]+)", done.stdout)
    lra = re.findall(r"lavfi\.r128\.LRA=([-\d.]+)", done.stdout)
    if not peaks or not lufs:
        raise AssertionError(f"ffmpeg measured nothing in {path.name}: {done.stderr[-500:]}")
    peak = max(peaks)
    return FfmpegReading(
        lufs=float(lufs[-1]),
        lra=float(lra[-1]) if lra else math.nan,
        true_peak_dbtp=20.0 * math.log10(peak) if peak > 0.0 else -math.inf,
    )


def pyloudnorm_lufs(samples: npt.NDArray[np.floating], rate: int) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)))


def reference_true_peak(samples: npt.NDArray[np.floating]) -> float:
    """dBTP of a 32x interpolation (Kaiser beta 10, 64 taps per phase)."""
    from scipy.signal import firwin, resample_poly

    taps = firwin(32 * 64 + 1, 1 / 32, window=("kaiser", 10.0))
    data = samples.reshape(samples.shape[0], -1).astype(np.float64)
    peak = max(
        float(np.max(np.abs(resample_poly(data[:, channel], 32, 1, window=taps))))
        for channel in range(data.shape[1])
    )
    return 20.0 * math.log10(peak)
