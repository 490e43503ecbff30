"""Turning an uploaded file into float32 samples, refusing what cannot be mastered.

WAV, AIFF, FLAC, Ogg and MP3 go through libsndfile (soundfile), which reads the header
first so an over-long file is refused before its samples are read. MP4/M4A, raw AAC and
anything libsndfile cannot read go through ffmpeg, with the demuxer pinned to the kind
the file's own bytes showed and only the ``file`` protocol allowed, so a crafted upload
cannot make ffmpeg follow playlists or open URLs.

ffmpeg is first asked what the file holds (``ffmpeg -i``: headers only), and channels,
rate and length are judged before anything is decoded. The decode itself then writes
raw float32 to a pipe, read straight into the track's array: nothing goes to /tmp, and
ffmpeg is held to the shape that was judged (``-ac``/``-ar`` pinned) and to one second
past the length limit (``-t``, and the frames are counted as they arrive), whatever
the header claimed. A small file that unpacks to gigabytes is refused for what it is.

Users get messages written here; what ffmpeg says goes to the log.
"""

from __future__ import annotations

import io
import logging
import math
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio import ffmpeg as _ffmpeg
from mastering.audio.sniff import is_truncated, sniff
from mastering.errors import (
    AudioTooLong,
    InternalError,
    InvalidAudio,
    OutOfDisk,
    ProcessingTimeout,
    UnsupportedFormat,
)
from mastering.formats import InputKind
from mastering.track import Track
from mastering.validation import check_samples, format_duration

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
# Decoding an hour of AAC takes about ten seconds; minutes mean a pathological file.
DECODE_TIMEOUT_S = 180.0
# Reading headers takes milliseconds.
PROBE_TIMEOUT_S = 30.0
# A duration ffmpeg estimated from the first frames' bitrate (raw AAC) may be off by a
# good part: refused before decoding only when this far over the limit; the frames
# counted while decoding decide the rest.
_ESTIMATED_DURATION_SLACK = 1.25

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
    silence are left to ``mastering.validation``. Temporary files (ffmpeg's log) go in
    ``work_dir`` and are gone when this returns.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InternalError(f"The {role} file could not be opened") from exc
    if size == 0:
        raise InvalidAudio(f"The {role} file is empty")
    try:
        sniffed = sniff(path)
        truncated = (
            sniffed is not None
            and sniffed.kind in (InputKind.WAV, InputKind.AIFF)
            and is_truncated(path, sniffed.offset)
        )
    except OSError as exc:
        raise InternalError(f"The {role} file could not be opened") from exc
    if sniffed is None:
        raise InvalidAudio(f"The {role} is not an audio file we can read; upload {_ACCEPTED} audio")
    if truncated:
        raise InvalidAudio(
            f"The {role} file is incomplete: it holds less audio than its header says "
            "(cut off while uploading or saving?); upload it again"
        )

    kind = sniffed.kind
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
    if audio.frames == 0 or audio.channels == 0:
        raise InvalidAudio(f"The {role} contains no audio")
    check_samples(audio, role=role)
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
    # "file:" keeps a name with a colon or a leading dash from reading as a protocol or
    # an option; the demuxer is the one the bytes showed.
    input_args = [
        "-protocol_whitelist",
        "file",
        "-f",
        _DEMUXERS[kind],
        "-i",
        f"file:{path.resolve()}",
    ]
    try:
        probe = _ffmpeg.probe_audio(input_args, ffmpeg_path=ffmpeg_path, timeout_s=PROBE_TIMEOUT_S)
    except ProcessingTimeout as exc:
        raise ProcessingTimeout(f"Decoding the {role} took too long") from exc
    stream = probe.audio
    if stream is None:
        if probe.opened:
            raise InvalidAudio(f"The {role} could not be decoded: it contains no audio")
        raise InvalidAudio(_undecodable(role))
    if stream.channels is None:
        raise UnsupportedFormat(
            f"The {role} has more than two channels; only mono and stereo are supported"
        )
    channels, rate = stream.channels, stream.sample_rate
    if rate <= 0:
        raise InvalidAudio(_undecodable(role))
    probed_frames = 0
    expected_frames: int | None = None
    if stream.duration_s is not None:
        slack = _ESTIMATED_DURATION_SLACK if stream.duration_estimated else 1.0
        probed_frames = math.floor(stream.duration_s / slack * rate)
        expected_frames = math.ceil(stream.duration_s * rate)
    _check_shape(
        channels=channels,
        sample_rate=rate,
        frames=probed_frames,
        role=role,
        max_duration_s=max_duration_s,
    )
    allowed = _allowed_frames(channels, rate, max_duration_s)
    decoder = _PipeDecoder(
        input_args,
        work_dir,
        channels=channels,
        rate=rate,
        # One second past the limit tells "too long" and bounds the work.
        cap_frames=allowed + rate,
        expected_frames=expected_frames,
        ffmpeg_path=ffmpeg_path,
    )
    samples = decoder.read(role=role)
    _check_shape(
        channels=channels,
        sample_rate=rate,
        frames=samples.shape[0],
        role=role,
        max_duration_s=max_duration_s,
    )
    return Track(samples, rate)


def _undecodable(role: str) -> str:
    return (
        f"The {role} could not be decoded: the file is damaged or not in a format we "
        f"read; upload {_ACCEPTED} audio"
    )


# Bytes asked of the pipe at a time (ffmpeg writes 4-64 KiB per packet).
_PIPE_READ_BYTES = 1 << 20
# Room for this long a track when the input does not say how long it is, and how
# much (at least) is added when a stream outruns the room it was given.
_UNKNOWN_LENGTH_S = 60
_GROWTH_S = 10


class _PipeDecoder:
    """ffmpeg decoding an input to raw float32 on its stdout, read into one array.

    The array is sized from the probed duration with room to spare (pages never
    written cost no memory) and grown if the header undersold the stream
    (``ndarray.resize``: a ``realloc``, which moves no pages at this size, though numpy
    zeroes the new part), never past ``cap_frames``; trimmed to what came at the end.
    """

    def __init__(
        self,
        input_args: list[str],
        work_dir: Path,
        *,
        channels: int,
        rate: int,
        cap_frames: int,
        expected_frames: int | None,
        ffmpeg_path: str | None,
    ) -> None:
        self.channels = channels
        self.rate = rate
        self.cap_frames = cap_frames
        self.expected_frames = expected_frames
        self.args = [
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            *input_args,
            "-map",
            "0:a:0",
            # Held to the shape that was judged, whatever the stream turns out to hold.
            "-ac",
            str(channels),
            "-ar",
            str(rate),
            "-t",
            f"{cap_frames / rate:.6f}",
            "-c:a",
            "pcm_f32le",
            "-f",
            "f32le",
            "pipe:1",
        ]
        self.stderr_path = work_dir / f".decode-{uuid.uuid4().hex}.log"
        self.ffmpeg_path = ffmpeg_path

    def read(self, *, role: str) -> npt.NDArray[np.float32]:
        process = _ffmpeg.start_ffmpeg(
            self.args,
            ffmpeg_path=self.ffmpeg_path,
            stderr_path=self.stderr_path,
            stdin=False,
            stdout=True,
        )
        timed_out = threading.Event()

        def stop_slow_decode() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(DECODE_TIMEOUT_S, stop_slow_decode)
        watchdog.daemon = True
        watchdog.start()
        try:
            samples = self._drain(process)
            returncode = process.wait()
            if timed_out.is_set():
                raise ProcessingTimeout(f"Decoding the {role} took too long")
            if returncode != 0:
                self._fail(returncode, role=role)
            return samples
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self.stderr_path.unlink(missing_ok=True)

    def _drain(self, process: subprocess.Popen[bytes]) -> npt.NDArray[np.float32]:
        stdout = process.stdout
        if not isinstance(stdout, io.BufferedReader):
            raise InternalError("Decoding failed")
        frame_bytes = 4 * self.channels
        if self.expected_frames is None:
            initial = _UNKNOWN_LENGTH_S * self.rate
        else:
            # Durations are printed to 10 ms and may be estimates: a stream that about
            # matches its header must end without a resize.
            initial = math.ceil(self.expected_frames * _ESTIMATED_DURATION_SLACK) + self.rate
        out = np.empty((max(1, min(self.cap_frames, initial)), self.channels), dtype=np.float32)
        filled = 0  # bytes
        while True:
            view = out.data.cast("B")
            try:
                while filled < view.nbytes:
                    got = stdout.readinto(view[filled : filled + _PIPE_READ_BYTES])
                    if not got:
                        break
                    filled += got
                full = filled == view.nbytes
            finally:
                view.release()
            if not full or out.shape[0] >= self.cap_frames:
                break
            # The header undersold the stream: room for more, up to the cap.
            grown = max(out.shape[0] * 5 // 4, out.shape[0] + _GROWTH_S * self.rate)
            out.resize((min(self.cap_frames, grown), self.channels), refcheck=False)
        if filled == out.nbytes and out.shape[0] >= self.cap_frames and stdout.read(1):
            # ffmpeg's -t should have stopped it; it did not, and we will not read on.
            process.kill()
        whole = filled // frame_bytes
        out.resize((whole, self.channels), refcheck=False)
        return out

    def _fail(self, returncode: int, *, role: str) -> None:
        stderr = _read_bytes(self.stderr_path)
        logger.warning(
            "ffmpeg failed to decode the %s (exit %s): %s",
            role,
            returncode,
            _ffmpeg.summarise_stderr(stderr),
        )
        if _ffmpeg.stderr_says_out_of_disk(stderr):
            raise OutOfDisk()
        if returncode < 0:
            # Killed (out of memory, say): not the file's fault.
            raise InternalError(f"Decoding the {role} was interrupted")
        if b"matches no streams" in stderr:
            raise InvalidAudio(f"The {role} could not be decoded: it contains no audio")
        raise InvalidAudio(_undecodable(role))


def _allowed_frames(channels: int, sample_rate: int, max_duration_s: float) -> int:
    """The most frames ``_check_shape`` lets through at this rate and channel count."""
    by_duration = max_duration_s * sample_rate
    by_samples = max_duration_s * FULL_LENGTH_RATE * 2 / channels
    return math.floor(min(by_duration, by_samples))


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
