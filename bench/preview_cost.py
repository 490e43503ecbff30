"""What ``"mode": "preview"`` costs against a full master of the same pair.

    PYTHONPATH=src .venv/bin/python -m bench.preview_cost [--minutes 2 4 8] [--rounds 3]

For each length, a synthesised 44.1 kHz stereo target and a 1-minute reference (16-bit
WAVs, cached in ``--work``) go through the pipeline the master function runs
(``pipeline.master_files``, in this process), with the reference's profile already
analysed (as the profile cache holds it from the job that auditions first): once as a
full job (``wav16``, no previews), once as a preview job (the loudest 30 s mastered,
both MP3 previews), once as an analysis. Medians of ``--rounds`` after a warm-up.
The issue's goal: a preview
costs at most half the full job on a 2-minute pair, and less as tracks get longer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.signals import write_song
from mastering.formats import OutputFormat
from mastering.jobs.model import JobMode
from mastering.pipeline import MasteringRequest, analyze_file, master_files, preload_engine

WORK = Path(tempfile.gettempdir()) / "mastering-preview-bench"
RATE = 44_100


def _pair(minutes: float, work: Path) -> tuple[Path, Path]:
    target = work / f"target-{minutes:g}min.wav"
    reference = work / "reference-1min.wav"
    if not target.exists():
        write_song(target, "rock", seed=1, rate=RATE, seconds=minutes * 60)
    if not reference.exists():
        write_song(reference, "electronic", seed=2, rate=RATE, seconds=60)
    return target, reference


def _seconds(request: MasteringRequest, rounds: int) -> float:
    times = []
    for index in range(rounds + 1):
        folder = request.work_dir / f"run-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        run = MasteringRequest(**{**request.__dict__, "work_dir": folder})
        start = time.perf_counter()
        master_files(run, lambda stage, percent: None)
        elapsed = time.perf_counter() - start
        shutil.rmtree(folder, ignore_errors=True)
        if index:  # the first is the warm-up
            times.append(elapsed)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    preload_engine()
    print("length   full job   preview   ratio   analyze   ratio")
    for minutes in args.minutes:
        target, reference = _pair(minutes, args.work)
        profile = analyze_file(reference, args.work, min_duration_s=1.0, max_duration_s=3600.0)
        base = MasteringRequest(
            target=target,
            reference_profile=profile,
            outputs=(OutputFormat.WAV16,),
            work_dir=args.work / "jobs",
            min_duration_s=1.0,
            max_duration_s=3600.0,
        )
        full = _seconds(base, args.rounds)
        preview = _seconds(
            MasteringRequest(**{**base.__dict__, "mode": JobMode.PREVIEW, "outputs": ()}),
            args.rounds,
        )
        analyze = _seconds(
            MasteringRequest(**{**base.__dict__, "mode": JobMode.ANALYZE, "outputs": ()}),
            args.rounds,
        )
        print(
            f"{minutes:4g} min   {full:6.2f} s   {preview:5.2f} s   {preview / full:5.2f}"
            f"   {analyze:5.2f} s   {analyze / full:5.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
