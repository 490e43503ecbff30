"""What a track's analysis (``engine.track_analysis``) costs, against decoding the
same file and mastering it.

    PYTHONPATH=src .venv/bin/python -m bench.analysis_cost [--minutes 3] [--rounds 5]

Synthesises a 16-bit 44.1 kHz stereo WAV and a 320 kbit/s MP3 of it (cached in
``--work``), then, in this one process, after a warm-up of each: decoding each
(``audio.decode.decode_audio``; the MP3 through ffmpeg),
analysing the decoded track, each meter alone, and the engine's ``master`` of it
against a reference's profile. Times are medians of ``--rounds``; memory is
tracemalloc's peak of numpy and Python allocations during one run (the decoded
track itself, allocated by decoding, is not counted in the analysis).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.signals import write_song
from mastering.engine.dsp import BLOCK_FRAMES

WORK = Path(tempfile.gettempdir()) / "mastering-analysis-bench"
RATE = 44_100


def _median_seconds(run: Callable[[], object], rounds: int) -> float:
    run()  # warm-up: caches (filters, windows, FFT plans) and pages
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mb(run: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()

    from mastering.audio.decode import decode_audio
    from mastering.audio.ffmpeg import find_ffmpeg
    from mastering.engine import fft
    from mastering.engine.analysis import analyze
    from mastering.engine.loudness import LoudnessMeter
    from mastering.engine.loudness_range import LoudnessRangeMeter
    from mastering.engine.master import MasterOptions, master
    from mastering.engine.spectrum_bands import BandMeter
    from mastering.engine.track_analysis import analyze_track
    from mastering.engine.true_peak import TruePeakMeter
    from mastering.track import Track

    fft.load()
    args.work.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60.0
    target = args.work / f"target-{args.minutes:g}min-{RATE}.wav"
    reference = args.work / f"reference-{args.minutes:g}min-{RATE}.wav"
    if not target.exists():
        write_song(target, "rock", 1, RATE, seconds, peak_dbfs=-8.0)
    if not reference.exists():
        write_song(reference, "electronic", 2, RATE, seconds, peak_dbfs=-0.3)
    mp3 = target.with_suffix(".mp3")
    if not mp3.exists():
        encode = ["-c:a", "libmp3lame", "-b:a", "320k", str(mp3)]
        subprocess.run(
            [find_ffmpeg(None), "-nostdin", "-loglevel", "error", "-i", str(target), *encode],
            check=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as work:

        def decode(path: Path = target) -> Track:
            return decode_audio(path, Path(work), role="target", max_duration_s=4 * 3600)

        track = decode()
        samples = track.samples

        def each_block(push: Callable[[np.ndarray], object]) -> Callable[[], None]:
            def run() -> None:
                for start in range(0, track.frames, BLOCK_FRAMES):
                    push(samples[start : start + BLOCK_FRAMES])

            return run

        def loudness_and_range() -> None:
            meter = LoudnessMeter(RATE, channels=2)
            lra = LoudnessRangeMeter(RATE, channels=2)
            each_block(lambda block: lra.push_squares(meter.push(block)))()
            lra.loudness_range()

        def true_peak() -> None:
            meter = TruePeakMeter(2)
            each_block(meter.push)()
            meter.finish()

        def bands() -> None:
            meter = BandMeter(RATE, channels=2)
            each_block(meter.push)()
            meter.levels_db()

        profile = analyze(decode_audio(reference, Path(work), role="r", max_duration_s=14400))

        def mastered() -> None:
            master(Track(samples.copy(), RATE), profile, MasterOptions(in_place=True))

        rows = [
            ("decode (16-bit WAV)", decode),
            ("decode (MP3, ffmpeg)", lambda: decode(mp3)),
            ("analysis (all meters)", lambda: analyze_track(track)),
            ("  loudness + LRA (K-weighting once)", loudness_and_range),
            ("  true peak", true_peak),
            ("  bands (STFT)", bands),
            ("master (engine, in place)", mastered),
        ]
        print(f"{args.minutes:g} min, {RATE} Hz stereo, median of {args.rounds}")
        print(f"{'':40s} {'seconds':>8s} {'peak MB':>8s}")
        for name, run in rows:
            seconds_taken = _median_seconds(run, args.rounds)
            print(f"{name:40s} {seconds_taken:8.3f} {_peak_mb(run):8.1f}", flush=True)


if __name__ == "__main__":
    main()
