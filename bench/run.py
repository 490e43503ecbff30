"""Benchmark: this engine (the master function's pipeline) against matchering.process.

For each length (minutes) and target rate it synthesises a target and a reference
(``bench/signals.py``; cached in ``--work``), then runs as separate processes on the
same files, alternating the order, after a warm-up:

* ``engine``: the pipeline with the default options (true-peak limiter, the
  reference's loudness under a -1 dBTP ceiling): what a job runs;
* ``engine-matchering``: the pipeline with the ``matchering`` limiter (fidelity mode,
  whose output is matchering's);
* ``matchering``: ``matchering.process`` (only up to its 15-minute limit).

It reports per case the median wall time of the whole process and the peak RSS of the
child (``wait4``), each kind's fastest and slowest round and the speed-up against
matchering's fastest round (the default path's median); the loudness and true peak
of each output and of the reference as ffmpeg's ``ebur128=peak=true`` measures them
(``tests/oracles.ffmpeg_meter``); and the residual of the fidelity mode's output against
matchering's, in dB below matchering's output RMS (compared at 44.1 kHz; a 48 kHz
master, which already carries matchering's resampling band edge, is brought there
ideally, by FFT, adding no edge of its own). The default path's output is not
matchering's (another limiter, another loudness), so it has no residual. Then where a
job's time goes on the 3-minute 44.1 kHz pair (``bench/stages.py``, in a child process),
the import time of the master handler module against ``import matchering``, each in
fresh processes, and the fidelity mode on 30-second clips of several styles, in process.

    .venv/bin/python bench/run.py [--lengths 3,10,60] [--rates 44100,48000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.signals import STYLES, song, write_song  # noqa: E402
from tests.oracles import FfmpegReading, ffmpeg_meter  # noqa: E402

CHILD = REPO / "bench" / "child.py"
STAGES = REPO / "bench" / "stages.py"
HANDLER_DIR = REPO / "functions" / "master"
MATCHERING_MAX_MINUTES = 15.0
REFERENCE_RATE = 44_100
DEFAULT, FIDELITY, MATCHERING = "engine", "engine-matchering", "matchering"
# The goals of issue 9 for the 3-minute 44.1 kHz pair, default path vs matchering.
GOAL_SPEED_UP = 4.0
GOAL_RSS_RATIO = 0.15


@dataclass
class Runs:
    wall_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def peak_mb(self) -> float:
        return max(self.rss_mb)

    @property
    def spread(self) -> str:
        return f"{min(self.wall_s):.2f}-{max(self.wall_s):.2f} s"


@dataclass
class PairResult:
    minutes: float
    rate: int
    out_rate: int
    runs: dict[str, Runs]
    # ffmpeg's reading of each kind's output, and of the reference ("reference").
    readings: dict[str, FfmpegReading]
    # The fidelity mode's output against matchering's, dB (None past matchering's limit).
    residual_db: float | None

    def speed_up(self, kind: str) -> float | None:
        if MATCHERING not in self.runs:
            return None
        return self.runs[MATCHERING].median_s / self.runs[kind].median_s

    def speed_up_against_fastest(self, kind: str) -> float | None:
        """matchering's fastest round over ``kind``'s median: the ratio when matchering
        is at its best (its time swings by a fifth from round to round on a 2-core
        machine, fastest right after another matchering run, so its median can flatter
        the engine), without letting one hiccup of the engine's decide."""
        if MATCHERING not in self.runs:
            return None
        return min(self.runs[MATCHERING].wall_s) / self.runs[kind].median_s

    def rss_ratio(self, kind: str) -> float | None:
        if MATCHERING not in self.runs:
            return None
        return self.runs[kind].peak_mb / self.runs[MATCHERING].peak_mb


def run_child(kind: str, target: Path, reference: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one fresh child process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(CHILD), kind, str(target), str(reference), str(out)],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{kind} failed on {target.name} (exit {child.returncode})")
    return wall, usage.ru_maxrss / 1024.0  # Linux reports KiB


def ensure_pair(work: Path, minutes: float, rate: int) -> tuple[Path, Path]:
    seconds = minutes * 60.0
    tag = f"{minutes:g}min"
    reference = work / f"reference-{tag}-{REFERENCE_RATE}.wav"
    target = work / f"target-{tag}-{rate}.wav"
    # A loud, bass-heavy reference and a quieter, denser mix to master against it.
    if not reference.exists():
        print(f"  synthesising {reference.name}", flush=True)
        write_song(reference, "electronic", 2, REFERENCE_RATE, seconds, peak_dbfs=-0.3)
    if not target.exists():
        print(f"  synthesising {target.name}", flush=True)
        write_song(target, "rock", 1, rate, seconds, peak_dbfs=-8.0)
    return target, reference


def residual_db(engine_out: Path, matchering_out: Path) -> float:
    """Residual power of engine vs matchering output, in dB relative to matchering's.

    Computed in a child process: a child's peak RSS (wait4) starts from its parent's
    RSS at fork, so this parent must stay small.
    """
    done = subprocess.run(
        [sys.executable, __file__, "--residual", str(engine_out), str(matchering_out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _residual_in_process(engine_out: Path, matchering_out: Path) -> float:
    ours, rate = sf.read(engine_out, always_2d=True)
    theirs, theirs_rate = sf.read(matchering_out, always_2d=True)
    if rate != theirs_rate:
        # Ideal (FFT) resampling: matchering's output already carries its resampler.
        from scipy.signal import resample

        ours = resample(ours, round(ours.shape[0] * theirs_rate / rate), axis=0)
    frames = min(ours.shape[0], theirs.shape[0])
    return power_ratio_db(ours[:frames] - theirs[:frames], theirs[:frames])


def power_ratio_db(residual: npt.NDArray[np.floating], signal: npt.NDArray[np.floating]) -> float:
    return float(10 * np.log10(np.mean(np.square(residual)) / np.mean(np.square(signal))))


def bench_pair(work: Path, minutes: float, rate: int, rounds: int, warmup: int) -> PairResult:
    target, reference = ensure_pair(work, minutes, rate)
    kinds = [DEFAULT]
    if minutes <= MATCHERING_MAX_MINUTES:
        kinds += [FIDELITY, MATCHERING]
    runs = {kind: Runs() for kind in kinds}
    outs = {kind: work / f"out-{kind}-{minutes:g}min-{rate}.wav" for kind in kinds}
    for index in range(warmup + rounds):
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            wall, rss = run_child(kind, target, reference, outs[kind])
            label = "warm-up" if index < warmup else f"round {index - warmup + 1}"
            print(f"  {minutes:g} min @ {rate}: {kind:17s} {label:8s} {wall:6.2f} s {rss:7.0f} MB")
            if index >= warmup:
                runs[kind].wall_s.append(wall)
                runs[kind].rss_mb.append(rss)
    readings = {kind: ffmpeg_meter(out) for kind, out in outs.items()}
    readings["reference"] = ffmpeg_meter(reference)
    result = PairResult(
        minutes=minutes,
        rate=rate,
        out_rate=sf.info(outs[DEFAULT]).samplerate,
        runs=runs,
        readings=readings,
        residual_db=residual_db(outs[FIDELITY], outs[MATCHERING]) if FIDELITY in outs else None,
    )
    for out in outs.values():
        out.unlink(missing_ok=True)
    return result


def stage_table(work: Path, minutes: float, runs: int) -> str:
    """``bench/stages.py``'s table for the pair at 44.1 kHz, from a child process
    (this parent must stay small, and the stages' process starts fresh)."""
    target, reference = ensure_pair(work, minutes, REFERENCE_RATE)
    done = subprocess.run(
        [sys.executable, str(STAGES), str(target), str(reference), "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def import_times(rounds: int) -> dict[str, float]:
    """Median seconds to import each module in a fresh interpreter (and whole process)."""
    probes = {
        "handler": ("import app", HANDLER_DIR),
        "matchering": ("import matchering", REPO),
    }
    inside: dict[str, list[float]] = {name: [] for name in probes}
    whole: dict[str, list[float]] = {name: [] for name in probes}
    for index in range(rounds + 1):
        for name, (statement, cwd) in probes.items():
            code = (
                f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            )
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
            )
            if index:  # the first round warms the page cache
                whole[name].append(time.perf_counter() - started)
                inside[name].append(float(done.stdout.strip()))
    medians = {f"{name}_import_s": statistics.median(v) for name, v in inside.items()}
    medians |= {f"{name}_process_s": statistics.median(v) for name, v in whole.items()}
    return medians


def style_fidelity(seconds: float) -> list[tuple[str, int, float, int]]:
    """(style, target rate, residual dB, output rate) of the fidelity mode (the
    matchering limiter) against matchering's stages, on clips, in process."""
    import matchering
    from matchering.checker import check
    from matchering.stages import main

    from mastering.engine.analysis import analyze
    from mastering.engine.master import MasterOptions, master
    from mastering.options import Limiter
    from mastering.track import Track

    matchering.log(lambda text: None)
    config = matchering.Config()
    options = MasterOptions(limiter=Limiter.MATCHERING)
    reference = song("electronic", 22, REFERENCE_RATE, seconds)
    profile = analyze(Track(reference, REFERENCE_RATE))
    reference_checked, _ = check(reference.astype(np.float64), REFERENCE_RATE, config, "reference")
    rows = []
    cases = [(style, rate) for rate in (REFERENCE_RATE, 48_000, 96_000) for style in STYLES]
    for style, rate in cases:
        target = song(style, 21, rate, seconds)
        target_checked, _ = check(target.astype(np.float64), rate, config, "target")
        expected, _, _ = main(target_checked, reference_checked.copy(), config)
        ours = master(Track(target, rate), profile, options)
        samples = ours.samples.astype(np.float64)
        if rate != REFERENCE_RATE:
            from scipy.signal import resample

            samples = resample(samples, round(samples.shape[0] * REFERENCE_RATE / rate), axis=0)
        frames = min(samples.shape[0], expected.shape[0])
        residual = power_ratio_db(samples[:frames] - expected[:frames], expected[:frames])
        rows.append((style, rate, residual, ours.sample_rate))
    return rows


def _seconds(result: PairResult, kind: str) -> str:
    return f"{result.runs[kind].median_s:.2f} s" if kind in result.runs else ""


def _megabytes(result: PairResult, kind: str) -> str:
    return f"{result.runs[kind].peak_mb:.0f} MB" if kind in result.runs else ""


def _ratio(value: float | None, unit: str, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}{unit}"


def print_whole_process(results: list[PairResult]) -> None:
    print("## Whole process, file to 16-bit WAV (median wall; peak RSS of the child)")
    print()
    print(
        "Speed-up and RSS ratio: against `matchering.process` on the same files. Default "
        "path: true-peak limiter at the reference's loudness; fidelity mode: matchering "
        "limiter."
    )
    print()
    print(
        "| pair | target rate | default path | fidelity mode | matchering | speed-up | "
        "fidelity speed-up | default RSS | fidelity RSS | matchering RSS | RSS ratio | "
        "output rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cells = [
            f"{r.minutes:g} min",
            str(r.rate),
            _seconds(r, DEFAULT),
            _seconds(r, FIDELITY),
            _seconds(r, MATCHERING) or f"(over {MATCHERING_MAX_MINUTES:g} min)",
            _ratio(r.speed_up(DEFAULT), "x", 1),
            _ratio(r.speed_up(FIDELITY), "x", 1),
            _megabytes(r, DEFAULT),
            _megabytes(r, FIDELITY),
            _megabytes(r, MATCHERING),
            _ratio(r.rss_ratio(DEFAULT), "", 2),
            str(r.out_rate),
        ]
        print(f"| {' | '.join(cells)} |")


def _reading(result: PairResult, kind: str) -> str:
    reading = result.readings.get(kind)
    if reading is None:
        return ""
    return f"{reading.lufs:.1f} LUFS, {reading.true_peak_dbtp:+.2f} dBTP"


def print_outputs(results: list[PairResult]) -> None:
    print("## Outputs as ffmpeg measures them (`ebur128=peak=true`: integrated, true peak)")
    print()
    print(
        "The default path aims at the reference's loudness under -1 dBTP; the fidelity "
        "mode is matchering's output (residual: its difference from matchering's, below "
        "matchering's RMS)."
    )
    print()
    print(
        "| pair | target rate | reference | default path | fidelity mode | matchering | "
        "fidelity residual |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        residual = "" if r.residual_db is None else f"{-r.residual_db:.1f} dB below"
        cells = [
            f"{r.minutes:g} min",
            str(r.rate),
            _reading(r, "reference"),
            _reading(r, DEFAULT),
            _reading(r, FIDELITY),
            _reading(r, MATCHERING),
            residual,
        ]
        print(f"| {' | '.join(cells)} |")


def print_spread(results: list[PairResult]) -> None:
    """Each kind's fastest and slowest round, and the speed-up against matchering's
    fastest round."""
    print()
    print("Rounds (fastest-slowest):")
    for r in results:
        spreads = ", ".join(f"{kind} {runs.spread}" for kind, runs in r.runs.items())
        fastest = r.speed_up_against_fastest(DEFAULT)
        tail = "" if fastest is None else f"; against matchering's fastest {fastest:.1f}x"
        print(f"- {r.minutes:g} min @ {r.rate}: {spreads}{tail}")


def print_goals(results: list[PairResult]) -> None:
    pair = next((r for r in results if r.minutes == 3 and r.rate == REFERENCE_RATE), None)
    speed_up = None if pair is None else pair.speed_up(DEFAULT)
    fastest = None if pair is None else pair.speed_up_against_fastest(DEFAULT)
    rss_ratio = None if pair is None else pair.rss_ratio(DEFAULT)
    if speed_up is None or fastest is None or rss_ratio is None:
        return
    print()
    print(
        f"Goals (3-min 44.1 kHz pair, default path): speed-up {speed_up:.1f}x "
        f"(goal >= {GOAL_SPEED_UP:g}x: {'met' if speed_up >= GOAL_SPEED_UP else 'NOT met'}; "
        f"against matchering's fastest round {fastest:.1f}x: "
        f"{'margin holds' if fastest >= GOAL_SPEED_UP else 'no margin'}), "
        f"RSS ratio {rss_ratio:.2f} (goal <= {GOAL_RSS_RATIO:g}: "
        f"{'met' if rss_ratio <= GOAL_RSS_RATIO else 'NOT met'})"
    )


def print_imports(imports: dict[str, float], rounds: int) -> None:
    print(f"## Import in a fresh interpreter (median of {rounds})")
    print()
    h, m = imports["handler_import_s"], imports["matchering_import_s"]
    hp, mp = imports["handler_process_s"], imports["matchering_process_s"]
    print("| what | import statement | whole `python -c` process |")
    print("|---|---|---|")
    print(f"| functions/master/app.py | {h:.3f} s | {hp:.3f} s |")
    print(f"| matchering | {m:.3f} s | {mp:.3f} s |")
    print(f"| ratio | {h / m:.2f} | {hp / mp:.2f} |")


def print_fidelity(styles: list[tuple[str, int, float, int]], seconds: float) -> None:
    print(
        f"## Fidelity mode on {seconds:g}-second clips "
        "(in process, `limiter=matchering` vs matchering's stages)"
    )
    print()
    print("| style | target rate | residual | output rate |")
    print("|---|---|---|---|")
    for style, rate, residual, out_rate in styles:
        print(f"| {style} | {rate} | {-residual:.1f} dB below | {out_rate} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="3,10,60", help="minutes, comma-separated")
    parser.add_argument("--rates", default="44100,48000", help="target rates, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--long-rounds", type=int, default=1, help="rounds past matchering's limit (engine only)"
    )
    parser.add_argument(
        "--stage-minutes", type=float, default=3.0, help="pair for the stage table (0: none)"
    )
    parser.add_argument("--stage-runs", type=int, default=5, help="in-process runs per path")
    parser.add_argument("--import-rounds", type=int, default=7)
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spectrum-bench"))
    return parser.parse_args()


def main() -> None:
    if sys.argv[1:2] == ["--residual"]:
        print(_residual_in_process(Path(sys.argv[2]), Path(sys.argv[3])))
        return
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    results = []
    for minutes in (float(v) for v in args.lengths.split(",")):
        for rate in (int(v) for v in args.rates.split(",")):
            long = minutes > MATCHERING_MAX_MINUTES
            rounds = args.long_rounds if long else args.rounds
            warmup = 0 if long else args.warmup
            results.append(bench_pair(args.work, minutes, rate, rounds, warmup))
    stages = ""
    if args.stage_minutes:
        stages = stage_table(args.work, args.stage_minutes, args.stage_runs)
    imports = import_times(args.import_rounds)
    styles = style_fidelity(args.clip_seconds)

    print()
    print_whole_process(results)
    print_spread(results)
    print_goals(results)
    print()
    print_outputs(results)
    if stages:
        print()
        print(
            f"## Where the time goes: {args.stage_minutes:g}-min 44.1 kHz pair, in process "
            f"(median of {args.stage_runs} after a warm-up; imports excluded)"
        )
        print()
        print(stages)
    print()
    print_imports(imports, args.import_rounds)
    print()
    print_fidelity(styles, args.clip_seconds)
    print()
    print(f"bench finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
