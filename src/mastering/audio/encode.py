"""Writing mastered samples in the formats the service offers."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio import ffmpeg as _ffmpeg
from mastering.audio.measure import all_finite
from mastering.errors import InternalError, ProcessingTimeout
from mastering.formats import OutputFormat

logger = logging.getLogger(__name__)

# (libsndfile container, subtype) for the formats soundfile writes itself.
_SOUNDFILE_FORMATS: dict[OutputFormat, tuple[str, str]] = {
    OutputFormat.WAV16: ("WAV", "PCM_16"),
    OutputFormat.WAV24: ("WAV", "PCM_24"),
    OutputFormat.FLAC: ("FLAC", "PCM_24"),
}
MP3_BITRATE = "320k"
# 320 kb/s exists only in MPEG-1 Layer III, i.e. at these rates; others are resampled.
_MP3_RATES = frozenset({32_000, 44_100, 48_000})
_MP3_CHANNELS = frozenset({1, 2})
# Encoding 15 minutes to MP3 takes well under a minute even on a small Lambda.
ENCODE_TIMEOUT_S = 300.0


def encode(
    samples: npt.NDArray[np.floating],
    sample_rate: int,
    fmt: OutputFormat,
    dest: Path,
    *,
    ffmpeg_path: str | None = None,
) -> Path:
    """Write ``samples`` (float, nominally [-1, 1], shaped (frames,) or (frames, channels))
    to ``dest`` as ``fmt`` and return ``dest``.

    The file appears at ``dest`` only once complete: it is written under a temporary name
    in the same directory and renamed, so a failure never leaves a half-written result.
    """
    fmt = OutputFormat(fmt)  # a plain "mp3" from a job record works too
    frames = _as_frames_by_channels(samples)
    if frames.shape[0] == 0:
        raise InternalError("There is no audio to encode")
    if sample_rate <= 0:
        raise InternalError(f"Cannot encode at a sample rate of {sample_rate} Hz")
    # Integer PCM and LAME both wrap or misbehave past full scale, and NaN has no
    # integer value at all; a master with either is our bug, not the user's.
    if not all_finite(frames):
        raise InternalError("The mastered audio contains invalid samples")
    clipped = np.clip(frames, -1.0, 1.0).astype(np.float32, copy=False)

    partial = dest.parent / f".encode-{uuid.uuid4().hex}.partial"
    try:
        if fmt == OutputFormat.MP3:
            _write_mp3(clipped, sample_rate, partial, ffmpeg_path=ffmpeg_path)
        else:
            container, subtype = _SOUNDFILE_FORMATS[fmt]
            sf.write(partial, clipped, sample_rate, subtype=subtype, format=container)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _write_mp3(
    samples: npt.NDArray[np.float32], sample_rate: int, dest: Path, *, ffmpeg_path: str | None
) -> None:
    args = mp3_args(sample_rate, samples.shape[1], dest)
    # f32le on ffmpeg's stdin must be little-endian, interleaved and contiguous.
    pcm = np.ascontiguousarray(samples, dtype="<f4")
    try:
        # A byte view of the array: no second copy of a long master in memory.
        result = _ffmpeg.run_ffmpeg(
            args,
            ffmpeg_path=ffmpeg_path,
            timeout_s=ENCODE_TIMEOUT_S,
            stdin_data=pcm.data.cast("B"),
        )
    except ProcessingTimeout as exc:
        raise ProcessingTimeout("Encoding the MP3 took too long") from exc
    if result.returncode != 0:
        logger.error("ffmpeg failed to encode MP3: %s", result.stderr[-2000:])
        raise InternalError("Encoding the MP3 failed")


def mp3_args(sample_rate: int, channels: int, dest: Path) -> list[str]:
    """ffmpeg arguments that encode f32le from stdin to a 320 kb/s MP3 at ``dest``."""
    if channels not in _MP3_CHANNELS:
        raise InternalError(f"MP3 holds mono or stereo, not {channels} channels")
    args = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "pipe",
        "-f",
        "f32le",
        "-ar",
        str(sample_rate),
        "-ac",
        str(channels),
        "-i",
        "pipe:0",
        "-c:a",
        "libmp3lame",
        "-b:a",
        MP3_BITRATE,
        # LAME's "near-best" algorithm quality; 0 is much slower for no audible gain.
        "-compression_level",
        "2",
    ]
    if sample_rate not in _MP3_RATES:
        args += ["-ar", str(mp3_rate(sample_rate))]
    return [*args, "-map_metadata", "-1", "-f", "mp3", "-y", f"file:{dest}"]


def mp3_rate(sample_rate: int) -> int:
    """The rate an MP3 of a ``sample_rate`` master is encoded at."""
    if sample_rate in _MP3_RATES:
        return sample_rate
    # Keep the 44.1 kHz family on 44.1 kHz so the resampling ratio stays simple.
    return 44_100 if sample_rate % 11_025 == 0 else 48_000


def _as_frames_by_channels(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    if samples.ndim == 1:
        return samples.reshape(-1, 1)
    if samples.ndim != 2:
        raise InternalError(f"Cannot encode samples shaped {samples.shape}")
    return samples
