"""Turning an uploaded file into float32 samples, refusing what cannot be mastered.

WAV, AIFF, FLAC, Ogg and MP3 go through libsndfile (soundfile), which reads the header
first so an over-long file is refused before its samples are read. MP4/M4A, raw AAC and
anything libsndfile cannot read go through ffmpeg, with the demuxer pinned to the kind
the file's own bytes showed and only the ``file`` protocol allowed, so a crafted upload
cannot make ffmpeg follow playlists or open URLs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio import ffmpeg as _ffmpeg
from mastering.audio.sniff import is_truncated, sniff_kind
from mastering.errors import (
    AudioTooLong,
    InternalError,
    InvalidAudio,
    ProcessingTimeout,
    UnsupportedFormat,
)
from mastering.formats import InputKind
from mastering.track import Track
from mastering.validation import format_duration

__all__ = ["decode_audio"]

logger = logging.getLogger(__name__)

MAX_CHANNELS = 2
# Below telephone quality nothing useful can be mastered; above 192 kHz an upload
# would need gigabytes of float32 per minute.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# The maximum duration holds in full up to this rate in stereo; above it the limit
# shrinks so a job never holds more samples than the measured longest job.
FULL_LENGTH_RATE = 48_000
# Decoding 15 minutes of AAC takes a few seconds; minutes mean a pathological file.
DECODE_TIMEOUT_S = 180.0

_SOUNDFILE_KINDS = frozenset(
    {InputKind.WAV, InputKind.AIFF, InputKind.FLAC, InputKind.OGG, InputKind.MP3}
)
# ffmpeg demuxer for each kind; MP4/M4A is read by the QuickTime demuxer "mov".
_DEMUXERS: dict[InputKind, str] = {
    InputKind.WAV: "wav",
    InputKind.AIFF: "aiff",
    InputKind.FLAC: "flac",
    InputKind.MP3: "mp3",
    InputKind.OGG: "ogg",
    InputKind.MP4: "mov",
    InputKind.AAC: "aac",
}
_ACCEPTED = "WAV, AIFF, FLAC, MP3, Ogg (Vorbis or Opus), M4A or AAC"


def decode_audio(
    path: Path,
    work_dir: Path,
    *,
    role: str,
    max_duration_s: float,
    ffmpeg_path: str | None = None,
) -> Track:
    """Decode ``path`` to float32 samples.

    ``role`` ("target" or "reference") names the file in every error. Raises InvalidAudio,
    UnsupportedFormat or AudioTooLong for files the user must replace; minimum length and
    silence are left to ``mastering.validation``. Temporary files go in ``work_dir`` and
    are gone when this returns.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InternalError(f"The {role} file could not be opened") from exc
    if size == 0:
        raise InvalidAudio(f"The {role} file is empty")
    try:
        kind = sniff_kind(path)
    except OSError as exc:
        raise InternalError(f"The {role} file could not be opened") from exc
    if kind is None:
        raise InvalidAudio(f"The {role} is not an audio file we can read; upload {_ACCEPTED} audio")
    if kind in (InputKind.WAV, InputKind.AIFF) and is_truncated(path):
        raise InvalidAudio(f"The {role} file is incomplete (cut off); upload it again")

    audio: Track | None = None
    if kind in _SOUNDFILE_KINDS:
        audio = _read_with_soundfile(path, role=role, max_duration_s=max_duration_s)
    if audio is None:
        audio = _read_with_ffmpeg(
            path,
            work_dir,
            kind=kind,
            role=role,
            max_duration_s=max_duration_s,
            ffmpeg_path=ffmpeg_path,
        )
    _check_samples(audio, role=role)
    return audio


def _read_with_soundfile(path: Path, *, role: str, max_duration_s: float) -> Track | None:
    """The decoded file, or None when libsndfile cannot read it and ffmpeg should try."""
    try:
        with sf.SoundFile(path) as handle:
            # The header alone decides length, channels and rate, before any sample is read.
            _check_shape(
                channels=handle.channels,
                sample_rate=handle.samplerate,
                frames=handle.frames,
                role=role,
                max_duration_s=max_duration_s,
            )
            samples = _read_float32(handle)
            rate = int(handle.samplerate)
    except (sf.SoundFileError, RuntimeError) as exc:
        # Opus in old libsndfile builds, MP3s with odd headers, damaged FLAC: ffmpeg's
        # decoders are more forgiving, so they get a turn before the user is told no.
        logger.info("soundfile could not read the %s (%s); trying ffmpeg", role, exc)
        return None
    return Track(np.ascontiguousarray(samples, dtype=np.float32), rate)


# Integer PCM libsndfile converts to float as sample / 2^(bits - 1) (exact in float32).
# Reading the integers and scaling them here is 2-3x faster than its conversion.
_INTEGER_SUBTYPES: dict[str, tuple[type[np.signedinteger], float]] = {
    "PCM_16": (np.int16, 1.0 / 32768.0),
}
_READ_BLOCK_FRAMES = 1 << 18


def _read_float32(handle: sf.SoundFile) -> npt.NDArray[np.float32]:
    """All remaining frames as float32 (frames, channels), as ``handle.read`` gives."""
    integer = _INTEGER_SUBTYPES.get(handle.subtype)
    if integer is None or handle.frames <= 0:
        samples: npt.NDArray[np.float32] = handle.read(dtype="float32", always_2d=True)
        return samples
    dtype, scale = integer
    out = np.empty((handle.frames, handle.channels), dtype=np.float32)
    # Block by block into the one float32 array: no whole-track integer copy.
    buffer = np.empty((min(_READ_BLOCK_FRAMES, handle.frames), handle.channels), dtype=dtype)
    position = 0
    while position < out.shape[0]:
        wanted = min(buffer.shape[0], out.shape[0] - position)
        got = handle.read(
            frames=wanted, dtype=buffer.dtype.name, always_2d=True, out=buffer[:wanted]
        )
        if got.shape[0] == 0:
            break
        np.multiply(got, np.float32(scale), out=out[position : position + got.shape[0]])
        position += got.shape[0]
    return out[:position]


def _read_with_ffmpeg(
    path: Path,
    work_dir: Path,
    *,
    kind: InputKind,
    role: str,
    max_duration_s: float,
    ffmpeg_path: str | None,
) -> Track:
    # A name of our own: nothing from the upload reaches ffmpeg's output argument.
    out = work_dir / f"decode-{uuid.uuid4().hex}.wav"
    source = path.resolve()
    args = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file",
        "-f",
        _DEMUXERS[kind],
        # "file:" keeps a name with a colon or a leading dash from reading as a protocol
        # or an option.
        "-i",
        f"file:{source}",
        "-map",
        "0:a:0",
        # One second past the limit is enough to tell "too long" and bounds the work.
        "-t",
        f"{max_duration_s + 1.0:.3f}",
        "-c:a",
        "pcm_f32le",
        "-rf64",
        "auto",
        "-f",
        "wav",
        "-n",
        f"file:{out}",
    ]
    try:
        try:
            result = _ffmpeg.run_ffmpeg(args, ffmpeg_path=ffmpeg_path, timeout_s=DECODE_TIMEOUT_S)
        except ProcessingTimeout as exc:
            raise ProcessingTimeout(f"Decoding the {role} took too long") from exc
        if result.returncode != 0 or not out.exists():
            raise InvalidAudio(f"The {role} could not be decoded: {_reason(result.stderr, path)}")
        try:
            with sf.SoundFile(out) as handle:
                _check_shape(
                    channels=handle.channels,
                    sample_rate=handle.samplerate,
                    frames=handle.frames,
                    role=role,
                    max_duration_s=max_duration_s,
                )
                samples = handle.read(dtype="float32", always_2d=True)
                rate = int(handle.samplerate)
        except (sf.SoundFileError, RuntimeError) as exc:
            logger.warning("ffmpeg's output for the %s was unreadable: %s", role, exc)
            raise InvalidAudio(f"The {role} could not be decoded") from exc
    finally:
        out.unlink(missing_ok=True)
    return Track(np.ascontiguousarray(samples, dtype=np.float32), rate)


def _reason(stderr: bytes, path: Path) -> str:
    logger.warning("ffmpeg failed to decode an upload: %s", stderr[-2000:])
    if b"matches no streams" in stderr:
        return "it contains no audio"
    return _ffmpeg.summarise_stderr(stderr, redact=(str(path), str(path.resolve())))


def _check_shape(
    *, channels: int, sample_rate: int, frames: int, role: str, max_duration_s: float
) -> None:
    if channels > MAX_CHANNELS:
        raise UnsupportedFormat(
            f"The {role} has {channels} channels; only mono and stereo are supported"
        )
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedFormat(
            f"The {role} has a sample rate of {sample_rate} Hz; "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz is supported"
        )
    if frames / sample_rate > max_duration_s:
        raise AudioTooLong(f"The {role} is longer than the {format_duration(max_duration_s)} limit")
    if frames * channels > max_duration_s * FULL_LENGTH_RATE * 2:
        # Memory follows samples, not seconds: the limits were measured for the longest
        # track at up to 48 kHz stereo, so a 96 kHz track may be half as long.
        allowed_s = max_duration_s * FULL_LENGTH_RATE * 2 / (sample_rate * channels)
        raise AudioTooLong(
            f"The {role} is longer than the {format_duration(allowed_s)} limit "
            f"for {channels}-channel audio at {sample_rate} Hz"
        )


def _check_samples(audio: Track, *, role: str) -> None:
    if audio.frames == 0 or audio.channels == 0:
        raise InvalidAudio(f"The {role} contains no audio")
    if not audio.is_finite():
        raise InvalidAudio(f"The {role} contains invalid samples (NaN or infinity)")


# Frames read at a time from ffmpeg when streaming a decode.
_STREAM_BLOCK_FRAMES = 1 << 16
# Decoding an hour of MP3 takes a few seconds.
_STREAM_TIMEOUT_S = 300.0


def stream_decoded(
    path: Path, *, channels: int, ffmpeg_path: str | None
) -> Iterator[npt.NDArray[np.float32]]:
    """The samples of a file we wrote (an MP3, say), as ffmpeg decodes it, block by
    block: (frames, channels) float32. For measuring what a listener will hear without
    holding the whole decode (an hour would be another 1.3 GB). InternalError if
    ffmpeg fails: the file is ours, so that is our fault."""
    stderr_path = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.decode.log")
    args = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file,pipe",
        "-i",
        f"file:{path}",
        "-map",
        "0:a:0",
        "-ac",
        str(channels),
        "-f",
        "f32le",
        "pipe:1",
    ]
    process = _ffmpeg.start_ffmpeg(
        args, ffmpeg_path=ffmpeg_path, stderr_path=stderr_path, stdin=False, stdout=True
    )
    frame_bytes = 4 * channels
    leftover = b""
    try:
        if process.stdout is None:
            raise InternalError("Decoding a result failed")
        while chunk := process.stdout.read(_STREAM_BLOCK_FRAMES * frame_bytes):
            data = leftover + chunk
            whole = len(data) - len(data) % frame_bytes
            leftover = data[whole:]
            yield np.frombuffer(data[:whole], dtype="<f4").reshape(-1, channels)
        returncode = process.wait(timeout=_STREAM_TIMEOUT_S)
        if returncode != 0:
            logger.error(
                "ffmpeg failed to decode a result: %s",
                _ffmpeg.summarise_stderr(_read_bytes(stderr_path)),
            )
            raise InternalError("Decoding a result failed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        stderr_path.unlink(missing_ok=True)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
