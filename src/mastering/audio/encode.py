"""Writing a master in the formats the service offers: every format in one pass.

WAV and FLAC are written block by block through libsndfile, and MP3 in the same pass
by feeding each block to ffmpeg's stdin, so no format costs a whole-track copy (an
hour of stereo is 1.3 GB). Each file appears under its final name only once complete
(written under a temporary name in the same folder, then renamed), so a failure never
leaves a half-written result. Samples are clipped to [-1, 1]: integer PCM and LAME
both wrap or misbehave past full scale. NaN or infinity in a master is a bug
upstream, refused rather than written. A full work directory is said as such
(``OutOfDisk``): libsndfile reports only "System error", so a failed write with the
disk all but full counts as one.

16-bit WAV may be TPDF-dithered (``dither``): rounding to 16 bits without it leaves
distortion correlated with the music in quiet passages and fades.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio.ffmpeg import start_ffmpeg, stderr_says_out_of_disk, summarise_stderr
from mastering.errors import InternalError, OutOfDisk, ProcessingTimeout, is_out_of_disk
from mastering.formats import OUTPUT_SPECS, OutputFormat

logger = logging.getLogger(__name__)

Float32Array = npt.NDArray[np.float32]

# (libsndfile container, subtype) for the formats soundfile writes itself.
SOUNDFILE_FORMATS: dict[OutputFormat, tuple[str, str]] = {
    OutputFormat.WAV16: ("WAV", "PCM_16"),
    OutputFormat.WAV24: ("WAV", "PCM_24"),
    OutputFormat.FLAC: ("FLAC", "PCM_24"),
}
MP3_BITRATE = "320k"
# 320 kb/s exists only in MPEG-1 Layer III, i.e. at these rates; others are resampled.
_MP3_RATES = frozenset({32_000, 44_100, 48_000})
_MP3_CHANNELS = frozenset({1, 2})
# Encoding an hour to MP3 takes well under this even on a small Lambda.
ENCODE_TIMEOUT_S = 300.0
# Frames per block written: ~3 s at 44.1 kHz, a few MB per temporary.
BLOCK_FRAMES = 1 << 17
# Deterministic dither: the same master gives the same file.
_DITHER_SEED = 0x5EED
# A write that failed with less than this left free failed for want of space (a block
# written is well under it).
_NEARLY_FULL_BYTES = 4 * 1024 * 1024


def output_path(work_dir: Path, fmt: OutputFormat) -> Path:
    return work_dir / f"out-{OUTPUT_SPECS[fmt].object_name}"


def write_files(
    samples: Float32Array,
    rate: int,
    formats: tuple[OutputFormat, ...],
    work_dir: Path,
    *,
    dither: bool = False,
    ffmpeg_path: str | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> dict[OutputFormat, Path]:
    """Write (frames, channels) ``samples`` in each format, in one pass; the paths."""
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise InternalError("There is no audio to encode")
    if rate <= 0:
        raise InternalError(f"Cannot encode at a sample rate of {rate} Hz")
    lossless = [fmt for fmt in formats if fmt in SOUNDFILE_FORMATS]
    mp3 = OutputFormat.MP3 in formats
    if mp3 and samples.shape[1] not in _MP3_CHANNELS:
        raise InternalError(f"MP3 holds mono or stereo, not {samples.shape[1]} channels")
    files = _write_streamed(
        samples, rate, lossless, mp3, work_dir, block_frames, ffmpeg_path, dither
    )
    return {fmt: files[fmt] for fmt in formats}


class _BlockBuffers:
    """The float and integer arrays one block's conversions need, reused from block to
    block: fresh multi-megabyte arrays page-fault on every block, and cost more than
    the arithmetic. Views of flat buffers, so a shorter last block is contiguous too."""

    def __init__(self, samples: int) -> None:
        self._clipped = np.empty(samples, dtype=np.float32)
        self._scaled = np.empty(samples, dtype=np.float32)
        self._noise = np.empty(samples, dtype=np.float32)
        self._pcm = np.empty(samples, dtype=np.int16)

    def clipped(self, shape: tuple[int, ...]) -> Float32Array:
        return self._clipped[: _size(shape)].reshape(shape)

    def scaled(self, shape: tuple[int, ...]) -> Float32Array:
        return self._scaled[: _size(shape)].reshape(shape)

    def noise(self, shape: tuple[int, ...]) -> Float32Array:
        return self._noise[: _size(shape)].reshape(shape)

    def pcm(self, shape: tuple[int, ...]) -> npt.NDArray[np.int16]:
        return self._pcm[: _size(shape)].reshape(shape)


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def _wav_pcm16(
    clipped: Float32Array, buffers: _BlockBuffers | None = None
) -> npt.NDArray[np.int16]:
    """libsndfile's float -> 16-bit WAV conversion done with numpy (four times faster
    than its per-sample loop, the same bytes; a test compares): the sample is rounded
    to 32 bits (``lrintf(x * 2^31)``, capped) and the top 16 kept (``>> 16``, a floor).
    Scaling by powers of two is exact in float32, so is every step here."""
    buffers = buffers or _BlockBuffers(clipped.size)
    scaled = np.multiply(clipped, np.float32(2.0**31), out=buffers.scaled(clipped.shape))
    np.rint(scaled, out=scaled)
    scaled *= np.float32(2.0**-16)
    np.floor(scaled, out=scaled)
    # The cap and the conversion to int16 in one pass (the values are whole already).
    pcm = buffers.pcm(clipped.shape)
    np.minimum(scaled, np.float32(32767.0), out=pcm, casting="unsafe")
    return pcm


def _dithered_pcm16(
    clipped: Float32Array, rng: np.random.Generator, buffers: _BlockBuffers | None = None
) -> npt.NDArray[np.int16]:
    """16-bit samples with TPDF dither: the difference of two uniform values, +-1 LSB,
    added before rounding, so the rounding error is noise independent of the music.

    Each uniform is 16 random bits (steps of 2^-16 LSB, far finer than the rounding it
    decorrelates), four to a 64-bit word of the generator: a third of the time of
    drawing two float32 uniforms per sample, which was most of writing the file."""
    buffers = buffers or _BlockBuffers(clipped.size)
    words = rng.bit_generator.random_raw(-(-clipped.size // 2))
    pairs = np.asarray(words).view(np.uint16)[: 2 * clipped.size].reshape(-1, 2)
    noise = buffers.noise(clipped.shape)
    np.subtract(pairs[:, 0], pairs[:, 1], out=noise.reshape(-1), dtype=np.float32)
    scaled = np.multiply(clipped, np.float32(32768.0), out=buffers.scaled(clipped.shape))
    # (u1 - u2) * 2^-16 LSB: exact in float32 (at most 17 significant bits).
    noise *= np.float32(2.0**-16)
    scaled += noise
    # Clipped before rounding (the bounds are whole numbers, so the order does not
    # matter), then rounded straight into int16.
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    pcm = buffers.pcm(clipped.shape)
    np.rint(scaled, out=pcm, casting="unsafe")
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
        """Stop ffmpeg and log why it failed; OutOfDisk if it ran out of space."""
        self._stop()
        try:
            stderr = self.stderr_path.read_bytes()
        except OSError:
            stderr = b""
        logger.error("ffmpeg failed to encode MP3: %s", summarise_stderr(stderr))
        self.stderr_path.unlink(missing_ok=True)
        if stderr_says_out_of_disk(stderr):
            raise OutOfDisk()


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
                container, subtype = SOUNDFILE_FORMATS[fmt]
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
            buffers = _BlockBuffers(min(block_frames, samples.shape[0]) * samples.shape[1])
            for start in range(0, samples.shape[0], block_frames):
                block = samples[start : start + block_frames]
                # NaN or infinity in a master is our bug; integer PCM cannot hold them.
                if not np.isfinite(block).all():
                    raise InternalError("The mastered audio contains invalid samples")
                clipped = np.clip(block, -1.0, 1.0, out=buffers.clipped(block.shape))
                pcm16 = None
                for writer in writers:
                    if writer.subtype == "PCM_16" and writer.format == "WAV":
                        if pcm16 is None:
                            pcm16 = (
                                _dithered_pcm16(clipped, rng, buffers)
                                if dither
                                else _wav_pcm16(clipped, buffers)
                            )
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
    except (sf.SoundFileError, OSError, InternalError) as exc:
        # Checked before the partial files go, while the disk is still as full as the
        # failed write found it.
        if not isinstance(exc, OutOfDisk) and _out_of_disk(exc, work_dir):
            raise OutOfDisk() from exc
        raise
    finally:
        if pipe is not None:
            pipe.abort()
        for partial in partials.values():
            partial.unlink(missing_ok=True)


def _out_of_disk(error: BaseException, work_dir: Path) -> bool:
    if is_out_of_disk(error):
        return True
    try:
        return shutil.disk_usage(work_dir).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


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
