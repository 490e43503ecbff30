"""Meters nobody here wrote, for asserting what a listener would measure.

- ``ffmpeg_meter``: ffmpeg's ``ebur128=peak=true+sample`` on a file as ffmpeg decodes
  it: integrated loudness, loudness range (EBU Tech 3342), true peak and sample peak.
  Read from the filter's frame metadata (three decimals) rather than its summary (one
  decimal): the values after the last 100-ms update.
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
    sample_peak_dbfs: float


def _ebur128_metadata(path: Path, options: str) -> subprocess.CompletedProcess[str]:
    """ffmpeg's ebur128 filter (with ``options``) on the decoded file; its per-frame
    metadata lines (``lavfi.r128.*=value``) are on stdout."""
    return subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-af",
            f"ebur128={options}metadata=1,ametadata=print:file=-",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def ffmpeg_meter(path: Path) -> FfmpegReading:
    """What ``ffmpeg -i PATH -af ebur128=peak=true+sample -f null -`` measures."""
    done = _ebur128_metadata(path, "peak=true+sample:")
    stdout = done.stdout
    peaks = [float(v) for v in re.findall(r"lavfi\.r128\.true_peak=([-\d.]+)", stdout)]
    lufs = re.findall(r"lavfi\.r128\.I=([-\d.]+)", stdout)
    lra = re.findall(r"lavfi\.r128\.LRA=([-\d.]+)", stdout)
    if not peaks or not lufs:
        raise AssertionError(f"ffmpeg measured nothing in {path.name}: {done.stderr[-500:]}")
    samples = [float(v) for v in re.findall(r"lavfi\.r128\.sample_peak=([-\d.]+)", stdout)]
    return FfmpegReading(
        lufs=float(lufs[-1]),
        lra=float(lra[-1]) if lra else math.nan,
        true_peak_dbtp=_db(max(peaks)),
        sample_peak_dbfs=_db(max(samples, default=0.0)),
    )


def ffmpeg_short_term(path: Path) -> list[float]:
    """ffmpeg's short-term loudness (3-s window, LUFS), every 100 ms from the first
    whole window on (``lavfi.r128.S``; ffmpeg updates its meters every 100 ms and
    decodes WAV in frames shorter than that, so each update is one frame's)."""
    stdout = _ebur128_metadata(path, "").stdout
    values = [float(v) for v in re.findall(r"lavfi\.r128\.S=([-\d.]+)", stdout)]
    # Before its first whole window ffmpeg reports the loudness of nothing (-inf, or
    # about -157 LUFS in builds that add DBL_EPSILON); 2.9 s of updates.
    return values[29:]


def _db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else -math.inf


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
