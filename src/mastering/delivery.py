"""Delivering a master: every requested file, each measured as its listener hears it.

Lossless files carry the master's own loudness and true peak (16/24-bit quantisation
moves them by far less than 0.01 dB). An MP3 decodes to something other than what was
encoded: its true peak is typically a few tenths of a dB above its source's. When the
master promises a ceiling, the MP3 is decoded and measured; while it is over, the
master is limited again, below the ceiling by the overshoot, and encoded again (at
most ``MP3_PASSES`` encodes), so the file as decoded keeps the promise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mastering.audio.decode import stream_decoded
from mastering.audio.encode import BLOCK_FRAMES, mp3_rate, write_files
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.true_peak import METER_TOLERANCE_DB, TruePeakStream, to_db
from mastering.engine.true_peak import true_peak as true_peak_stream_max
from mastering.engine.true_peak_limiter import limit_in_place
from mastering.errors import InternalError
from mastering.formats import OutputFormat
from mastering.track import Track

logger = logging.getLogger(__name__)

# Encodes of one MP3 at most: the first, then re-limited ones while it decodes over
# the ceiling (one is nearly always enough).
MP3_PASSES = 4
# How far under the ceiling a re-limited MP3 source aims, beyond the overshoot seen.
MP3_MARGIN_DB = 0.1


@dataclass(frozen=True)
class Measurement:
    lufs: float | None
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class Delivered:
    path: Path
    measurement: Measurement


def deliver(
    master: Track,
    formats: tuple[OutputFormat, ...],
    work_dir: Path,
    *,
    measured: Measurement,
    ceiling_dbtp: float | None,
    dither: bool,
    ffmpeg_path: str | None,
    block_frames: int = BLOCK_FRAMES,
) -> dict[OutputFormat, Delivered]:
    """Write ``master`` in every format (the MP3 last: holding it under ``ceiling_dbtp``
    may limit ``master``'s samples again, in place); ``measured`` is the master's."""
    files = write_files(
        master.samples,
        master.sample_rate,
        formats,
        work_dir,
        dither=dither,
        ffmpeg_path=ffmpeg_path,
        block_frames=block_frames,
    )
    delivered = {fmt: Delivered(path, measured) for fmt, path in files.items()}
    if OutputFormat.MP3 in delivered:
        delivered[OutputFormat.MP3] = _mp3_under_ceiling(
            master,
            files[OutputFormat.MP3],
            measured,
            ceiling_dbtp,
            work_dir=work_dir,
            block_frames=block_frames,
            ffmpeg_path=ffmpeg_path,
        )
    return delivered


def deliver_mp3s_side_by_side(
    masters: Sequence[tuple[Track, Path]],
    *,
    ceiling_dbtp: float | None,
    ffmpeg_path: str | None,
    block_frames: int = BLOCK_FRAMES,
) -> list[Delivered]:
    """An MP3 of each (master, folder), as ``deliver`` writes one, in a fraction of the
    time: the encodes run side by side (ffmpeg processes; the threads here only feed
    their pipes), then each file is measured and held under the ceiling in turn (the
    meters keep per-rate buffers that threads would share)."""
    # Each source's true peak first: where the re-limiting of an MP3 that decodes over
    # the ceiling starts from.
    peaks = [true_peak_stream_max(master.samples) for master, _ in masters]
    with ThreadPoolExecutor(max_workers=max(1, len(masters))) as pool:
        paths = list(
            pool.map(
                lambda job: write_files(
                    job[0].samples,
                    job[0].sample_rate,
                    (OutputFormat.MP3,),
                    job[1],
                    ffmpeg_path=ffmpeg_path,
                    block_frames=block_frames,
                )[OutputFormat.MP3],
                masters,
            )
        )
    return [
        _mp3_under_ceiling(
            master,
            path,
            Measurement(lufs=None, true_peak_dbtp=to_db(peak) if peak > 0 else None),
            ceiling_dbtp,
            work_dir=folder,
            block_frames=block_frames,
            ffmpeg_path=ffmpeg_path,
        )
        for (master, folder), path, peak in zip(masters, paths, peaks, strict=True)
    ]


def measure_encoded(
    path: Path, *, sample_rate: int, channels: int, ffmpeg_path: str | None
) -> Measurement:
    """Loudness and true peak of an MP3 of a ``sample_rate`` master, as decoded."""
    meter = LoudnessMeter(mp3_rate(sample_rate), channels=channels)
    peaks = TruePeakStream(channels)
    for block in stream_decoded(path, channels=channels, ffmpeg_path=ffmpeg_path):
        meter.push(block)
        peaks.push(block)
    found = peaks.finish()
    peak = float(found.max()) if found.shape[0] else 0.0
    return Measurement(lufs=meter.integrated(), true_peak_dbtp=to_db(peak) if peak > 0 else None)


def _mp3_under_ceiling(
    master: Track,
    path: Path,
    measured: Measurement,
    ceiling_dbtp: float | None,
    *,
    work_dir: Path,
    block_frames: int,
    ffmpeg_path: str | None,
) -> Delivered:
    samples, rate = master.samples, master.sample_rate

    def measure() -> Measurement:
        return measure_encoded(
            path, sample_rate=rate, channels=master.channels, ffmpeg_path=ffmpeg_path
        )

    found = measure()
    source_peak = measured.true_peak_dbtp
    # Under the ceiling as any BS.1770 meter reads it, not only this one.
    limit = None if ceiling_dbtp is None else ceiling_dbtp - METER_TOLERANCE_DB
    for attempt in range(1, MP3_PASSES):
        peak = found.true_peak_dbtp
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
        # Written over the first MP3 (the same name in the same folder).
        write_files(
            samples,
            rate,
            (OutputFormat.MP3,),
            work_dir,
            ffmpeg_path=ffmpeg_path,
            block_frames=block_frames,
        )
        found = measure()
    peak = found.true_peak_dbtp
    if limit is not None and peak is not None and peak > limit:
        logger.error("MP3 still decodes over the ceiling: %.2f dBTP", peak)
        raise InternalError("The MP3 could not be kept under the true-peak ceiling")
    return Delivered(path, found)
