"""Writing the master in every requested format without copying the whole track.

``mastering.audio.encode.encode`` clips a copy of the whole array before writing: for
an hour of stereo that is another 1.3 GB. WAV and FLAC are written here block by
block instead (same containers and subtypes, same clip to [-1, 1], same
write-then-rename), all formats in one pass over the samples. MP3 is in the same
pass: each clipped block is written to ffmpeg's stdin (the arguments of
``encode``'s MP3 path), so no format costs a whole-track copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from mastering.audio.encode import _SOUNDFILE_FORMATS, ENCODE_TIMEOUT_S, encode, mp3_args
from mastering.audio.ffmpeg import start_ffmpeg, summarise_stderr
from mastering.audio.measure import all_finite
from mastering.engine.dsp import BLOCK_FRAMES, Float32Array
from mastering.errors import InternalError, ProcessingTimeout
from mastering.formats import OUTPUT_SPECS, OutputFormat

logger = logging.getLogger(__name__)


def output_path(work_dir: Path, fmt: OutputFormat) -> Path:
    return work_dir / f"out-{OUTPUT_SPECS[fmt].object_name}"


def write_outputs(
    samples: Float32Array,
    rate: int,
    outputs: tuple[OutputFormat, ...],
    work_dir: Path,
    *,
    ffmpeg_path: str | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> dict[OutputFormat, Path]:
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise InternalError("There is no audio to encode")
    files: dict[OutputFormat, Path] = {}
    streamed = [fmt for fmt in outputs if fmt in _SOUNDFILE_FORMATS]
    mp3 = OutputFormat.MP3 in outputs and samples.shape[1] in (1, 2)
    if streamed or mp3:
        files.update(
            _write_streamed(samples, rate, streamed, mp3, work_dir, block_frames, ffmpeg_path)
        )
    for fmt in outputs:
        if fmt not in files:
            files[fmt] = encode(
                samples, rate, fmt, output_path(work_dir, fmt), ffmpeg_path=ffmpeg_path
            )
    return {fmt: files[fmt] for fmt in outputs}


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


def _write_streamed(
    samples: Float32Array,
    rate: int,
    formats: list[OutputFormat],
    mp3: bool,
    work_dir: Path,
    block_frames: int,
    ffmpeg_path: str | None,
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
            for start in range(0, samples.shape[0], block_frames):
                block = samples[start : start + block_frames]
                # NaN or infinity in a master is our bug; integer PCM cannot hold them.
                if not all_finite(block):
                    raise InternalError("The mastered audio contains invalid samples")
                clipped = np.clip(block, -1.0, 1.0).astype(np.float32, copy=False)
                pcm16 = None
                for writer in writers:
                    if writer.subtype == "PCM_16" and writer.format == "WAV":
                        pcm16 = _wav_pcm16(clipped) if pcm16 is None else pcm16
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
