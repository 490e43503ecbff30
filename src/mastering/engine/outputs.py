"""Writing the master in every requested format without copying the whole track.

``mastering.audio.encode.encode`` clips a copy of the whole array before writing: for
an hour of stereo that is another 1.3 GB. WAV and FLAC are written here block by
block instead (same containers and subtypes, same clip to [-1, 1], same
write-then-rename), all formats in one pass over the samples. MP3 is in the same
pass: each clipped block is written to ffmpeg's stdin (the arguments of
``encode``'s MP3 path), so no format costs a whole-track copy.

16-bit WAV gets TPDF dither when asked (``dither``): rounding a master to 16 bits
without it leaves distortion correlated with the music in quiet passages.

An MP3 decodes to something other than what was encoded: its true peak is typically a
few tenths of a dB above its source's. When the master promises a ceiling
(``mp3_ceiling_dbtp``), the MP3 is decoded and measured; if it is over, the master is
limited again, below the ceiling by the overshoot, and encoded again (up to
``MP3_PASSES`` times), so the file as decoded keeps the promise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio.encode import (
    _SOUNDFILE_FORMATS,
    ENCODE_TIMEOUT_S,
    encode,
    mp3_args,
    mp3_rate,
)
from mastering.audio.ffmpeg import start_ffmpeg, summarise_stderr
from mastering.audio.measure import all_finite
from mastering.engine.dsp import BLOCK_FRAMES, Float32Array
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.true_peak import METER_TOLERANCE_DB, TruePeakStream, to_db
from mastering.engine.true_peak_limiter import limit_in_place
from mastering.errors import InternalError, ProcessingTimeout
from mastering.formats import OUTPUT_SPECS, OutputFormat

logger = logging.getLogger(__name__)

# Encodes of one MP3 at most: the first, then re-limited ones while it decodes over
# the ceiling (one is nearly always enough).
MP3_PASSES = 4
# How far under the ceiling a re-limited MP3 source aims, beyond the overshoot seen.
MP3_MARGIN_DB = 0.1
# Frames read at a time from ffmpeg when decoding an MP3 to measure it.
_DECODE_BLOCK_FRAMES = 1 << 16
# Deterministic dither: the same master gives the same file.
_DITHER_SEED = 0x5EED


@dataclass(frozen=True)
class Measurement:
    lufs: float | None
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class WrittenOutput:
    path: Path
    # The file as its listener hears it: a lossless file carries the master's values
    # (16/24-bit quantisation moves them by far less than 0.01 dB); an MP3 is decoded.
    measurement: Measurement


def output_path(work_dir: Path, fmt: OutputFormat) -> Path:
    return work_dir / f"out-{OUTPUT_SPECS[fmt].object_name}"


def write_outputs(
    samples: Float32Array,
    rate: int,
    outputs: tuple[OutputFormat, ...],
    work_dir: Path,
    *,
    master: Measurement,
    ffmpeg_path: str | None = None,
    block_frames: int = BLOCK_FRAMES,
    dither: bool = False,
    mp3_ceiling_dbtp: float | None = None,
) -> dict[OutputFormat, WrittenOutput]:
    """Write ``samples`` in each format. The MP3 comes last: holding it under
    ``mp3_ceiling_dbtp`` may limit ``samples`` again, in place."""
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise InternalError("There is no audio to encode")
    files: dict[OutputFormat, Path] = {}
    streamed = [fmt for fmt in outputs if fmt in _SOUNDFILE_FORMATS]
    mp3 = OutputFormat.MP3 in outputs and samples.shape[1] in (1, 2)
    if streamed or mp3:
        files.update(
            _write_streamed(
                samples, rate, streamed, mp3, work_dir, block_frames, ffmpeg_path, dither
            )
        )
    for fmt in outputs:
        if fmt not in files:
            files[fmt] = encode(
                samples, rate, fmt, output_path(work_dir, fmt), ffmpeg_path=ffmpeg_path
            )
    written = {fmt: WrittenOutput(files[fmt], master) for fmt in outputs}
    if OutputFormat.MP3 in written:
        written[OutputFormat.MP3] = _mp3_under_ceiling(
            samples,
            rate,
            written[OutputFormat.MP3].path,
            master,
            mp3_ceiling_dbtp,
            work_dir=work_dir,
            block_frames=block_frames,
            ffmpeg_path=ffmpeg_path,
        )
    return written


def _mp3_under_ceiling(
    samples: Float32Array,
    rate: int,
    path: Path,
    master: Measurement,
    ceiling_dbtp: float | None,
    *,
    work_dir: Path,
    block_frames: int,
    ffmpeg_path: str | None,
) -> WrittenOutput:
    measured = measure_encoded(
        path, sample_rate=rate, channels=samples.shape[1], ffmpeg_path=ffmpeg_path
    )
    source_peak = master.true_peak_dbtp
    # Under the ceiling as any BS.1770 meter reads it, not only this one.
    limit = None if ceiling_dbtp is None else ceiling_dbtp - METER_TOLERANCE_DB
    for attempt in range(1, MP3_PASSES):
        peak = measured.true_peak_dbtp
        if limit is None or peak is None or peak <= limit:
            break
        if source_peak is None or not math.isfinite(source_peak):
            source_peak = limit
        # The encoder adds about the same overshoot to a source limited a little lower.
        source_peak = min(source_peak, limit) - (peak - limit) - MP3_MARGIN_DB
        logger.info(
            "MP3 decodes %.2f dB over the ceiling; limiting its source to %.2f dBTP (pass %d)",
            peak - limit,
            source_peak,
            attempt + 1,
        )
        limit_in_place(samples, rate, source_peak, margin_db=0.0, block=block_frames)
        if attempt == MP3_PASSES - 1:
            # Last pass: a plain gain on top, for an encoder that keeps overshooting.
            samples *= np.float32(10.0 ** (-(peak - limit) / 20.0))
        replaced = _write_streamed(
            samples, rate, [], True, work_dir, block_frames, ffmpeg_path, False
        )[OutputFormat.MP3]
        os.replace(replaced, path)
        measured = measure_encoded(
            path, sample_rate=rate, channels=samples.shape[1], ffmpeg_path=ffmpeg_path
        )
    peak = measured.true_peak_dbtp
    if limit is not None and peak is not None and peak > limit:
        logger.error("MP3 still decodes over the ceiling: %.2f dBTP", peak)
        raise InternalError("The MP3 could not be kept under the true-peak ceiling")
    return WrittenOutput(path, measured)


def measure_encoded(
    path: Path, *, sample_rate: int, channels: int, ffmpeg_path: str | None
) -> Measurement:
    """Loudness and true peak of an MP3 of a ``sample_rate`` master as ffmpeg decodes
    it, streamed (an hour of it would be another 1.3 GB of float32)."""
    stderr_path = path.with_suffix(".decode.log")
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
    process = start_ffmpeg(
        args, ffmpeg_path=ffmpeg_path, stderr_path=stderr_path, stdin=False, stdout=True
    )
    rate = mp3_rate(sample_rate)
    meter = LoudnessMeter(rate, channels=channels)
    peaks = TruePeakStream(channels)
    frame_bytes = 4 * channels
    leftover = b""
    try:
        if process.stdout is None:
            raise InternalError("Measuring the MP3 failed")
        while True:
            chunk = process.stdout.read(_DECODE_BLOCK_FRAMES * frame_bytes)
            if not chunk:
                break
            data = leftover + chunk
            whole = len(data) - len(data) % frame_bytes
            leftover = data[whole:]
            block = np.frombuffer(data[:whole], dtype="<f4").reshape(-1, channels)
            meter.push(block)
            peaks.push(block)
        returncode = process.wait(timeout=ENCODE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if returncode != 0:
        logger.error("ffmpeg failed to decode the MP3: %s", summarise_stderr(_read(stderr_path)))
        stderr_path.unlink(missing_ok=True)
        raise InternalError("Measuring the MP3 failed")
    stderr_path.unlink(missing_ok=True)
    found = peaks.finish()
    peak = float(found.max()) if found.shape[0] else 0.0
    lufs = meter.integrated()
    return Measurement(lufs=lufs, true_peak_dbtp=to_db(peak) if peak > 0.0 else None)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _wav_pcm16(clipped: Float32Array) -> npt.NDArray[np.int16]:
    """libsndfile's float -> 16-bit WAV conversion done with numpy (four times faster
    than its per-sample loop, the same bytes; a test compares): the sample is rounded
    to 32 bits (``lrintf(x * 2^31)``, capped) and the top 16 kept (``>> 16``, a floor).
    Scaling by powers of two is exact in float32, so is every step here."""
    scaled = np.rint(clipped * np.float32(2.0**31))
    scaled *= np.float32(2.0**-16)
    np.floor(scaled, out=scaled)
    np.minimum(scaled, 32767.0, out=scaled)
    pcm: npt.NDArray[np.int16] = scaled.astype(np.int16)
    return pcm


class _Mp3Pipe:
    """ffmpeg encoding an MP3 from the float32 blocks written to its stdin."""

    def __init__(self, rate: int, channels: int, dest: Path, ffmpeg_path: str | None) -> None:
        self.stderr_path = dest.with_suffix(".log")
        self.process = start_ffmpeg(
            mp3_args(rate, channels, dest), ffmpeg_path=ffmpeg_path, stderr_path=self.stderr_path
        )

    def write(self, clipped: Float32Array) -> None:
        pcm = np.ascontiguousarray(clipped, dtype="<f4")
        try:
            if self.process.stdin is None:
                raise BrokenPipeError
            self.process.stdin.write(pcm.data.cast("B"))
        except (BrokenPipeError, OSError) as exc:
            self._failed()
            raise InternalError("Encoding the MP3 failed") from exc

    def finish(self) -> None:
        if self.process.stdin is not None:
            # Closing may fail if ffmpeg already exited: its exit status says why.
            with contextlib.suppress(BrokenPipeError, OSError):
                self.process.stdin.close()
        try:
            returncode = self.process.wait(timeout=ENCODE_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.abort()
            raise ProcessingTimeout("Encoding the MP3 took too long") from exc
        if returncode != 0:
            self._failed()
            raise InternalError("Encoding the MP3 failed")
        self.stderr_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop ffmpeg if it still runs and remove its log."""
        self._stop()
        self.stderr_path.unlink(missing_ok=True)

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _failed(self) -> None:
        self._stop()
        try:
            stderr = self.stderr_path.read_bytes()
        except OSError:
            stderr = b""
        logger.error("ffmpeg failed to encode MP3: %s", summarise_stderr(stderr))
        self.stderr_path.unlink(missing_ok=True)


def _dithered_pcm16(clipped: Float32Array, rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """16-bit samples with TPDF dither: the difference of two uniform values, +-1 LSB,
    added before rounding, so the rounding error is noise independent of the music."""
    noise = rng.random(clipped.shape, dtype=np.float32)
    noise -= rng.random(clipped.shape, dtype=np.float32)
    scaled = clipped * np.float32(32768.0)
    scaled += noise
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    pcm: npt.NDArray[np.int16] = scaled.astype(np.int16)
    return pcm


def _write_streamed(
    samples: Float32Array,
    rate: int,
    formats: list[OutputFormat],
    mp3: bool,
    work_dir: Path,
    block_frames: int,
    ffmpeg_path: str | None,
    dither: bool,
) -> dict[OutputFormat, Path]:
    all_formats = [*formats, *([OutputFormat.MP3] if mp3 else [])]
    partials = {fmt: work_dir / f".encode-{uuid.uuid4().hex}.partial" for fmt in all_formats}
    pipe: _Mp3Pipe | None = None
    try:
        with ExitStack() as stack:
            writers = []
            for fmt in formats:
                container, subtype = _SOUNDFILE_FORMATS[fmt]
                writers.append(
                    stack.enter_context(
                        sf.SoundFile(
                            partials[fmt],
                            "w",
                            samplerate=rate,
                            channels=samples.shape[1],
                            subtype=subtype,
                            format=container,
                        )
                    )
                )
            if mp3:
                pipe = _Mp3Pipe(rate, samples.shape[1], partials[OutputFormat.MP3], ffmpeg_path)
            rng = np.random.default_rng(_DITHER_SEED)
            for start in range(0, samples.shape[0], block_frames):
                block = samples[start : start + block_frames]
                # NaN or infinity in a master is our bug; integer PCM cannot hold them.
                if not all_finite(block):
                    raise InternalError("The mastered audio contains invalid samples")
                clipped = np.clip(block, -1.0, 1.0).astype(np.float32, copy=False)
                pcm16 = None
                for writer in writers:
                    if writer.subtype == "PCM_16" and writer.format == "WAV":
                        if pcm16 is None:
                            pcm16 = _dithered_pcm16(clipped, rng) if dither else _wav_pcm16(clipped)
                        writer.write(pcm16)
                    else:
                        writer.write(clipped)
                if pipe is not None:
                    pipe.write(clipped)
            if pipe is not None:
                pipe.finish()
                pipe = None
        files: dict[OutputFormat, Path] = {}
        for fmt in all_formats:
            dest = output_path(work_dir, fmt)
            os.replace(partials[fmt], dest)
            files[fmt] = dest
        return files
    finally:
        if pipe is not None:
            pipe.abort()
        for partial in partials.values():
            partial.unlink(missing_ok=True)
