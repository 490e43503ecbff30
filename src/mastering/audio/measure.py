"""Loudness and peak measurements, and the checks that make audio worth mastering.

pyloudnorm and ``scipy.signal`` are imported by the two whole-array meters that use
them, not here: this module is on every job's path (decoding and validation use its
peak and finiteness checks), and those two imports take about a second. The engine
meters its streams itself (``mastering.engine.loudness``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mastering.errors import AudioTooLong, AudioTooShort, SilentAudio

if TYPE_CHECKING:
    from mastering.audio.decode import DecodedAudio

# BS.1770 gates loudness over 400 ms blocks; shorter audio has no integrated loudness.
_LOUDNESS_BLOCK_S = 0.4
# BS.1770-4 Annex 2: 4x oversampling is enough for true peak at 44.1/48 kHz.
_TRUE_PEAK_OVERSAMPLING = 4
_TRUE_PEAK_BLOCK_S = 10.0
# resample_poly's default filter spans 10 input samples either side at 4x; 64 leaves a
# wide margin so block edges see the same neighbours as one long pass would.
_TRUE_PEAK_OVERLAP_FRAMES = 64
# all_finite checks this many values at a time so its boolean scratch array stays small.
_FINITE_CHECK_VALUES = 1 << 21


def integrated_lufs(samples: npt.NDArray[np.floating], sample_rate: int) -> float | None:
    """Integrated loudness (BS.1770-4, gated) in LUFS, or None when it is undefined.

    Undefined means shorter than one 400 ms block, or so quiet every block is gated out.
    """
    import pyloudnorm

    frames = samples.shape[0]
    if frames < math.ceil(_LOUDNESS_BLOCK_S * sample_rate):
        return None
    meter = pyloudnorm.Meter(sample_rate)
    loudness = float(meter.integrated_loudness(samples))
    if not math.isfinite(loudness):
        return None
    return loudness


def true_peak_dbtp(
    samples: npt.NDArray[np.floating],
    sample_rate: int,
    *,
    block_frames: int | None = None,
) -> float:
    """True peak in dBTP: the sample peak of a 4x oversampled copy (BS.1770-4 Annex 2).

    Hand-written because pyloudnorm has no true-peak meter. Each channel is oversampled
    in blocks (``block_frames``, about ten seconds by default) that overlap so the filter
    sees real neighbours at block edges: memory stays at a few MB however long the track
    is, and the result equals one pass over the whole signal.
    """
    from scipy.signal import resample_poly

    block = block_frames or max(1, int(_TRUE_PEAK_BLOCK_S * sample_rate))
    channels = _as_frames_by_channels(samples)
    frames = channels.shape[0]
    pad = _TRUE_PEAK_OVERLAP_FRAMES
    up = _TRUE_PEAK_OVERSAMPLING
    peak = 0.0
    for channel in range(channels.shape[1]):
        signal = channels[:, channel]
        for start in range(0, frames, block):
            stop = min(start + block, frames)
            lead = min(pad, start)
            tail = min(pad, frames - stop)
            # float32 stays float32: upfirdn is a third faster on it and a peak needs no more.
            segment = np.ascontiguousarray(signal[start - lead : stop + tail])
            oversampled = resample_poly(segment, up, 1)
            # Keep only the output that belongs to [start, stop); the padding was context.
            core = oversampled[lead * up : (lead + stop - start) * up]
            if core.size:
                peak = max(peak, float(np.max(np.abs(core))))
    return _to_db(peak)


# Frames per block when scanning for the peak: np.abs of a whole hour of float32
# stereo would be another 1.3 GB.
_PEAK_BLOCK_FRAMES = 1 << 18


def sample_peak(samples: npt.NDArray[np.floating]) -> float:
    """The largest absolute sample (linear), scanned in blocks; 0.0 for no samples."""
    peak = 0.0
    for start in range(0, samples.shape[0] if samples.ndim else 0, _PEAK_BLOCK_FRAMES):
        block = samples[start : start + _PEAK_BLOCK_FRAMES]
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
    return peak


def sample_peak_dbfs(samples: npt.NDArray[np.floating]) -> float:
    """The largest absolute sample in dBFS; -inf for silence or no samples."""
    return _to_db(sample_peak(samples))


def is_digital_silence(samples: npt.NDArray[np.floating], threshold_dbfs: float = -80.0) -> bool:
    """True when no sample reaches ``threshold_dbfs`` (dither and hum stay below -80 dBFS)."""
    return sample_peak_dbfs(samples) < threshold_dbfs


def all_finite(samples: npt.NDArray[np.floating]) -> bool:
    """True when no sample is NaN or infinite."""
    flat = samples.reshape(-1)
    return all(
        bool(np.isfinite(flat[start : start + _FINITE_CHECK_VALUES]).all())
        for start in range(0, flat.size, _FINITE_CHECK_VALUES)
    )


def validate_for_mastering(
    audio: DecodedAudio, *, role: str, min_duration_s: float, max_duration_s: float
) -> None:
    """Refuse audio that decodes fine but cannot be mastered: too short, too long, silent."""
    duration = audio.duration_s
    if duration < min_duration_s:
        raise AudioTooShort(
            f"The {role} is {duration:.2f} seconds long; "
            f"it must be at least {format_duration(min_duration_s)}"
        )
    if duration > max_duration_s:
        raise AudioTooLong(f"The {role} is longer than the {format_duration(max_duration_s)} limit")
    if is_digital_silence(audio.samples):
        raise SilentAudio(f"The {role} is silent")


def format_duration(seconds: float) -> str:
    """A limit as a person says it: "15 minutes", "1 minute 30 seconds", "0.5 seconds"."""
    whole_minutes, rest = divmod(seconds, 60.0)
    minutes = int(whole_minutes)
    parts: list[str] = []
    if minutes:
        parts.append(f"{minutes} minute{'' if minutes == 1 else 's'}")
    if rest or not minutes:
        parts.append(f"{rest:g} second{'' if rest == 1 else 's'}")
    return " ".join(parts)


def _as_frames_by_channels(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    if samples.ndim == 1:
        return samples.reshape(-1, 1)
    if samples.ndim != 2:
        raise ValueError(f"samples must be (frames,) or (frames, channels), not {samples.shape}")
    return samples


def _to_db(amplitude: float) -> float:
    if amplitude <= 0.0:
        return -math.inf
    return 20.0 * math.log10(amplitude)
