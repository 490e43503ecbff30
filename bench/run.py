"""Benchmark: this engine (the master function's pipeline) against matchering.process.

For each length (minutes) and target rate it synthesises a target and a reference
(``bench/signals.py``; cached in ``--work``), then runs both as separate processes on
the same files, alternating which goes first, after a warm-up, and reports per case:
median wall time of the whole process, peak RSS of the child (``wait4``), and the
residual between the two outputs in dB below matchering's output RMS (compared at
44.1 kHz; a 48 kHz master, which already carries matchering's resampling band edge,
is brought there ideally, by FFT, adding no edge of its own). matchering only runs up to
its 15-minute limit. Then the import time of the master handler module against
``import matchering``, each in fresh processes, and fidelity on 30-second clips of
several styles, in process.

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

CHILD = REPO / "bench" / "child.py"
HANDLER_DIR = REPO / "functions" / "master"
MATCHERING_MAX_MINUTES = 15.0
REFERENCE_RATE = 44_100


@dataclass
class Runs:
    wall_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


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


def bench_pair(
    work: Path, minutes: float, rate: int, rounds: int, warmup: int
) -> dict[str, object]:
    target, reference = ensure_pair(work, minutes, rate)
    kinds = ["engine"]
    if minutes <= MATCHERING_MAX_MINUTES:
        kinds.append("matchering")
    runs = {kind: Runs() for kind in kinds}
    outs = {kind: work / f"out-{kind}-{minutes:g}min-{rate}.wav" for kind in kinds}
    for index in range(warmup + rounds):
        order = kinds if index % 2 == 0 else kinds[::-1]
        for kind in order:
            wall, rss = run_child(kind, target, reference, outs[kind])
            label = "warm-up" if index < warmup else f"round {index - warmup + 1}"
            print(f"  {minutes:g} min @ {rate}: {kind:10s} {label:8s} {wall:6.2f} s {rss:7.0f} MB")
            if index >= warmup:
                runs[kind].wall_s.append(wall)
                runs[kind].rss_mb.append(rss)
    result: dict[str, object] = {
        "minutes": minutes,
        "rate": rate,
        "engine_s": statistics.median(runs["engine"].wall_s),
        "engine_mb": max(runs["engine"].rss_mb),
        "out_rate": sf.info(outs["engine"]).samplerate,
    }
    if "matchering" in runs:
        result["matchering_s"] = statistics.median(runs["matchering"].wall_s)
        result["matchering_mb"] = max(runs["matchering"].rss_mb)
        result["residual_db"] = residual_db(outs["engine"], outs["matchering"])
    for out in outs.values():
        out.unlink(missing_ok=True)
    return result


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
    """(style, target rate, residual dB, output rate) for 30-second clips, in process."""
    import matchering
    from matchering.checker import check
    from matchering.stages import main

    from mastering.engine.analysis import analyze
    from mastering.engine.master import master
    from mastering.track import Track

    matchering.log(lambda text: None)
    config = matchering.Config()
    reference = song("electronic", 22, REFERENCE_RATE, seconds)
    profile = analyze(Track(reference, REFERENCE_RATE))
    reference_checked, _ = check(reference.astype(np.float64), REFERENCE_RATE, config, "reference")
    rows = []
    cases = [(style, rate) for rate in (REFERENCE_RATE, 48_000, 96_000) for style in STYLES]
    for style, rate in cases:
        target = song(style, 21, rate, seconds)
        target_checked, _ = check(target.astype(np.float64), rate, config, "target")
        expected, _, _ = main(target_checked, reference_checked.copy(), config)
        ours = master(Track(target, rate), profile)
        samples = ours.samples.astype(np.float64)
        if rate != REFERENCE_RATE:
            from scipy.signal import resample

            samples = resample(samples, round(samples.shape[0] * REFERENCE_RATE / rate), axis=0)
        frames = min(samples.shape[0], expected.shape[0])
        residual = power_ratio_db(samples[:frames] - expected[:frames], expected[:frames])
        rows.append((style, rate, residual, ours.sample_rate))
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--residual"]:
        print(_residual_in_process(Path(sys.argv[2]), Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="3,10,60", help="minutes, comma-separated")
    parser.add_argument("--rates", default="44100,48000", help="target rates, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--long-rounds", type=int, default=1, help="rounds past matchering's limit (engine only)"
    )
    parser.add_argument("--import-rounds", type=int, default=7)
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spectrum-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    results = []
    for minutes in (float(v) for v in args.lengths.split(",")):
        for rate in (int(v) for v in args.rates.split(",")):
            long = minutes > MATCHERING_MAX_MINUTES
            rounds = args.long_rounds if long else args.rounds
            warmup = 0 if long else args.warmup
            results.append(bench_pair(args.work, minutes, rate, rounds, warmup))
    imports = import_times(args.import_rounds)
    styles = style_fidelity(args.clip_seconds)

    print()
    print("## Whole process, file to 16-bit WAV (median wall; peak RSS of the child)")
    print()
    print(
        "| pair | target rate | engine | matchering | speed-up | engine RSS | "
        "matchering RSS | RSS ratio | residual | output rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        line = f"| {r['minutes']:g} min | {r['rate']} | {r['engine_s']:.2f} s | "
        if "matchering_s" in r:
            speed = float(r["matchering_s"]) / float(r["engine_s"])  # type: ignore[arg-type]
            ratio = float(r["engine_mb"]) / float(r["matchering_mb"])  # type: ignore[arg-type]
            line += (
                f"{r['matchering_s']:.2f} s | {speed:.1f}x | {r['engine_mb']:.0f} MB | "
                f"{r['matchering_mb']:.0f} MB | {ratio:.2f} | "
                f"{-float(r['residual_db']):.1f} dB below | "  # type: ignore[arg-type]
            )
        else:
            line += f"(over {MATCHERING_MAX_MINUTES:g} min) | | {r['engine_mb']:.0f} MB | | | | "
        line += f"{r['out_rate']} |"
        print(line)
    print()
    print(f"## Import in a fresh interpreter (median of {args.import_rounds})")
    print()
    h, m = imports["handler_import_s"], imports["matchering_import_s"]
    hp, mp = imports["handler_process_s"], imports["matchering_process_s"]
    print("| what | import statement | whole `python -c` process |")
    print("|---|---|---|")
    print(f"| functions/master/app.py | {h:.3f} s | {hp:.3f} s |")
    print(f"| matchering | {m:.3f} s | {mp:.3f} s |")
    print(f"| ratio | {h / m:.2f} | {hp / mp:.2f} |")
    print()
    print(f"## Fidelity on {args.clip_seconds:g}-second clips (in process, vs matchering stages)")
    print()
    print("| style | target rate | residual | output rate |")
    print("|---|---|---|---|")
    for style, rate, residual, out_rate in styles:
        print(f"| {style} | {rate} | {-residual:.1f} dB below | {out_rate} |")
    print()
    print(f"bench finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
