"""What one loudness-meter pass costs: a job runs it on the reference, the target, the
EQ'd target and the result.

    PYTHONPATH=src .venv/bin/python -m bench.loudness_cost [WAV] [--rounds 5]

Reads WAV (default: a synthesised 3-minute 44.1 kHz stereo song, cached in ``--work``)
as float32 and pushes it in blocks of ``BLOCK_FRAMES`` frames, as the engine does,
through ``LoudnessMeter`` alone (the master's passes) and through ``LoudnessMeter``
with a ``LoudnessRangeMeter`` fed its squares (``track_analysis``'s pass). Prints the
best of ``--rounds`` seconds of each and the readings, so two checkouts can be
compared (run it with each one's ``src`` first on ``PYTHONPATH``): the time should
drop, the LUFS and LRA not move beyond rounding.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from bench.signals import write_song
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.loudness_range import LoudnessRangeMeter

WORK = Path(tempfile.gettempdir()) / "mastering-loudness-bench"
BLOCK_FRAMES = 131_072

Blocks = list[npt.NDArray[np.float32]]


def _blocks(path: Path) -> tuple[Blocks, int]:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    blocks = [
        np.ascontiguousarray(audio[start : start + BLOCK_FRAMES])
        for start in range(0, audio.shape[0], BLOCK_FRAMES)
    ]
    return blocks, int(rate)


def _meter(blocks: Blocks, rate: int, *, with_range: bool) -> tuple[float | None, float | None]:
    frames = sum(block.shape[0] for block in blocks)
    channels = blocks[0].shape[1]
    meter = LoudnessMeter(rate, channels=channels, frames=frames)
    loudness_range = LoudnessRangeMeter(rate, channels=channels)
    for block in blocks:
        squares = meter.push(block)
        if with_range:
            loudness_range.push_squares(squares)
    return meter.integrated(), loudness_range.loudness_range() if with_range else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", nargs="?", type=Path, help="a WAV file (default: synthesised)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    path = args.wav
    if path is None:
        args.work.mkdir(parents=True, exist_ok=True)
        path = args.work / "song-3min-44100.wav"
        if not path.exists():
            write_song(path, "rock", seed=1, rate=44_100, seconds=180)
    blocks, rate = _blocks(path)
    seconds = sum(block.shape[0] for block in blocks) / rate
    print(f"{path}: {seconds:.0f} s at {rate} Hz, {blocks[0].shape[1]} channels")
    for with_range, label in ((False, "LoudnessMeter"), (True, "LoudnessMeter + range")):
        _meter(blocks, rate, with_range=with_range)  # warm-up: filter designs, BLAS
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter()
            lufs, lra = _meter(blocks, rate, with_range=with_range)
            best = min(best, time.perf_counter() - start)
        readings = f"LUFS {lufs!r}" + (f", LRA {lra!r}" if with_range else "")
        print(f"{label:22s} best of {args.rounds}: {best:.4f} s   {readings}")


if __name__ == "__main__":
    main()
