"""Delivering a master: every requested file, each measured as its listener hears it.

Lossless files carry the master's own loudness and true peak (16/24-bit quantisation
moves them by far less than 0.01 dB). An MP3 decodes to something other than what was
encoded: its true peak is typically 0.3-0.4 dB above its source's. When the master
promises a ceiling, the MP3 is encoded after the lossless files from the master
limited ``MP3_OVERSHOOT_DB`` lower (peaks only: its loudness moves by about 0.1 LU),
then decoded and measured; while it is still over, the master is limited lower by the
overshoot seen and encoded again (at most ``MP3_PASSES`` encodes), so the file as
decoded keeps the promise. Limiting before the first encode spares the second on most
music: an hour at 320 kb/s takes about a minute to encode on one core.
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
from mastering.engine.true_peak import METER_TOLERANCE_DB, TruePeakMeter, to_db
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
# How far over its source a 320 kb/s MP3 usually decodes (0.35-0.5 dB measured on
# synthesised music), plus a little: the first MP3 source is limited this far under
# the ceiling.
MP3_OVERSHOOT_DB = 0.6
# How far under the master an MP3 with a ceiling is first encoded: above the
# encoder's usual overshoot, so one encode nearly always keeps the ceiling. The MP3 is
# that much quieter than the lossless files (its own loudness is reported).
MP3_HEADROOM_DB = 0.6


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
    limits ``master``'s samples again, in place); ``measured`` is the master's."""
    mp3 = OutputFormat.MP3 in formats
    # With a ceiling, the MP3 is encoded on its own, after the master is limited for it.
    held = mp3 and ceiling_dbtp is not None
    together = tuple(fmt for fmt in formats if not (held and fmt is OutputFormat.MP3))
    files = (
        write_files(
            master.samples,
            master.sample_rate,
            together,
            work_dir,
            dither=dither,
            ffmpeg_path=ffmpeg_path,
            block_frames=block_frames,
        )
        if together
        else {}
    )
    delivered = {fmt: Delivered(path, measured) for fmt, path in files.items()}
    if mp3:
        source_peak = measured.true_peak_dbtp
        if ceiling_dbtp is not None:
            aim = ceiling_dbtp - METER_TOLERANCE_DB - MP3_OVERSHOOT_DB
            if source_peak is None or source_peak > aim:
                limit_in_place(
                    master.samples, master.sample_rate, aim, margin_db=0.0, block=block_frames
                )
                source_peak = aim
            files[OutputFormat.MP3] = write_files(
                master.samples,
                master.sample_rate,
                (OutputFormat.MP3,),
                work_dir,
                ffmpeg_path=ffmpeg_path,
                block_frames=block_frames,
            )[OutputFormat.MP3]
        delivered[OutputFormat.MP3] = _mp3_under_ceiling(
            master,
            files[OutputFormat.MP3],
            source_peak,
            ceiling_dbtp,
            work_dir=work_dir,
            block_frames=block_frames,
            ffmpeg_path=ffmpeg_path,
        )
    # In the order asked.
    return {fmt: delivered[fmt] for fmt in formats}


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
            to_db(peak) if peak > 0 else None,
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
    peaks = TruePeakMeter(channels)
    for block in stream_decoded(path, channels=channels, ffmpeg_path=ffmpeg_path):
        meter.push(block)
        peaks.push(block)
    peak = peaks.finish()
    return Measurement(lufs=meter.integrated(), true_peak_dbtp=to_db(peak) if peak > 0 else None)


def _mp3_under_ceiling(
    master: Track,
    path: Path,
    source_peak: float | None,
    ceiling_dbtp: float | None,
    *,
    work_dir: Path,
    block_frames: int,
    ffmpeg_path: str | None,
) -> Delivered:
    """Measure the MP3 at ``path``, encoded from ``master`` with its true peak at
    ``source_peak`` dBTP; while it decodes over the ceiling, limit ``master`` lower and
    encode it again."""
    samples, rate = master.samples, master.sample_rate

    def measure() -> Measurement:
        return measure_encoded(
            path, sample_rate=rate, channels=master.channels, ffmpeg_path=ffmpeg_path
        )

    found = measure()
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
