"""Where one job's time goes: ``master_files`` in process, with its stages timed.

    python bench/stages.py TARGET REFERENCE [--runs 5] [--all-formats]

Runs the master function's pipeline (16-bit WAV out, or all four formats) on the
pair with the default options (true-peak limiter) and with the ``matchering``
limiter (fidelity mode), one untimed warm-up each (imports, FFT plans) and then
``--runs`` each, alternating, and prints a Markdown table of the median seconds per
stage, calls nested ``--depth`` deep at most.

Nothing in ``src/`` is changed: the stage functions are wrapped where their callers
look them up at call time (``analyze_file``, a global of ``mastering.pipeline``; the
functions the pipeline imports inside its own, from ``mastering.audio.decode``,
``mastering.engine.analysis``, ``mastering.engine.track_analysis`` and
``mastering.delivery``; ``master``'s stages, globals of ``mastering.engine.master``;
``deliver``'s parts, globals of ``mastering.delivery``), and the loudness and
true-peak meters' ``push`` on their classes. A call made inside another timed one is
shown under it ("of which"); "other" is what the job spends outside every timed stage.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar
from unittest import mock

P = ParamSpec("P")
R = TypeVar("R")

# What each timed name does, for the table (the name itself is shown too).
LABELS = {
    "analyze_file": "reference: decode, check, analyse",
    "decode_audio": "decode",
    "analyze": "reference profile: loudest pieces, spectra",
    "audio_fingerprint": "sha256 of the decoded samples (same-audio check)",
    "analyze_track": "the track's analysis: loudness, LRA, true peak, bands",
    "analyze_levels": "target's loudest pieces and spectra",
    "design_firs": "matching EQ design",
    "convolve_stage": "EQ convolution",
    "limiter_stats": "limiter's analysis pass: K-weighted power, true peak per group",
    "exact_peaks_from": "true peaks measured 8x where the limiter may act",
    "plan_for_loudness": "loudness solve: make-up gain and limiter plan",
    "true_peak_stage": "gain and limiter applied, the result analysed",
    "result_true_peak": "the result's true peak, from the rows the limiter's bounds point at",
    "correct_levels": "matchering's RMS corrections",
    "limit_stage": "matchering's limiter, the result analysed",
    "deliver": "outputs written and measured",
    "write_files": "WAV/FLAC/MP3 written in one streamed pass",
    "_mp3_under_ceiling": "MP3 held under the ceiling: decoded, measured, re-encoded",
    "measure_encoded": "an encoded file decoded and measured",
    "limit_in_place": "master limited again for the MP3",
    "LoudnessMeter.push": "loudness meter (K-weighting, gating blocks)",
    "TruePeakStream.push": "true-peak meter per group (8x interpolation)",
    "TruePeakMeter.push": "true-peak meter, largest only (screened rows 8x)",
    "BandMeter.push": "one-third-octave band meter",
}
# Deeper calls (e.g. the meter inside ``true_peak`` inside ``true_peak_stage``) mostly
# repeat their parent's time.
DEFAULT_DEPTH = 2
PATHS = ("default", "matchering")
TOTAL, OTHER = "total", "other"


@dataclass
class StageClock:
    """Seconds per stage key ("outer/inner" for nested calls), one dict per run."""

    runs: list[dict[str, float]] = field(default_factory=list)
    _stack: list[str] = field(default_factory=list)

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        key = "/".join([*self._stack, name])
        self._stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._stack.pop()
            if self.runs:
                run = self.runs[-1]
                run[key] = run.get(key, 0.0) + time.perf_counter() - started

    def timed(self, name: str | Callable[..., str], function: Callable[P, R]) -> Callable[P, R]:
        """``function`` timed as ``name``, or as what ``name`` returns for the call's
        arguments (to tell apart calls of one function with different costs)."""

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self.timing(name if isinstance(name, str) else name(*args, **kwargs)):
                return function(*args, **kwargs)

        return wrapper


@contextmanager
def instrumented(clock: StageClock) -> Iterator[None]:
    """The pipeline's stage functions and the meters wrapped with ``clock``, for the block.

    Each is patched where its caller looks it up when it runs, and every name must
    still be there: a renamed stage is an error here, not a row silently missing.
    """
    import mastering.audio.decode as decode
    import mastering.delivery as delivery
    import mastering.engine.analysis as analysis
    import mastering.engine.master as engine
    import mastering.engine.track_analysis as track_analysis
    import mastering.pipeline as pipeline
    from mastering.engine.loudness import LoudnessMeter
    from mastering.engine.spectrum_bands import BandMeter
    from mastering.engine.true_peak import TruePeakMeter, TruePeakStream

    functions: list[tuple[ModuleType, str]] = [
        # A pipeline global: _reference_profile calls it by that name.
        (pipeline, "analyze_file"),
        # The pipeline imports these inside its functions, from their modules, at call
        # time: the target's decode and analysis are top-level rows, the reference's
        # appear under analyze_file.
        (decode, "decode_audio"),
        (analysis, "analyze"),
        (analysis, "audio_fingerprint"),
        (track_analysis, "analyze_track"),
        # ``master``'s stages, globals of mastering.engine.master.
        (engine, "analyze_levels"),
        (engine, "design_firs"),
        (engine, "convolve_stage"),
        (engine, "limiter_stats"),
        (engine, "exact_peaks_from"),
        (engine, "plan_for_loudness"),
        (engine, "true_peak_stage"),
        (engine, "result_true_peak"),
        (engine, "correct_levels"),
        (engine, "limit_stage"),
        # Imported inside _master_and_deliver; its parts are delivery's globals (with
        # --all-formats, the MP3's ceiling check).
        (delivery, "deliver"),
        (delivery, "write_files"),
        (delivery, "_mp3_under_ceiling"),
        (delivery, "measure_encoded"),
        (delivery, "limit_in_place"),
    ]
    with ExitStack() as patches:
        for module, name in functions:
            if not hasattr(module, name):
                raise SystemExit(f"{module.__name__}.{name} is gone: update bench/stages.py")
            patches.enter_context(
                mock.patch.object(module, name, clock.timed(name, getattr(module, name)))
            )
        for cls in (LoudnessMeter, TruePeakStream, TruePeakMeter, BandMeter):
            wrapped = clock.timed(f"{cls.__name__}.push", cls.push)
            patches.enter_context(mock.patch.object(cls, "push", wrapped))
        yield


def run_job(
    target: Path, reference: Path, path: str, clock: StageClock, *, all_formats: bool = False
) -> None:
    """One ``master_files`` call as a new run of ``clock``: its stages (as far as they
    are wrapped), its "total" and the "other" time outside every top-level stage."""
    from mastering.formats import OutputFormat
    from mastering.options import Limiter, RequestedOptions, resolve_options
    from mastering.pipeline import MasteringRequest, master_files

    limiter = Limiter.MATCHERING if path == "matchering" else None
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as work:
        request = MasteringRequest(
            target=target,
            reference=reference,
            outputs=tuple(OutputFormat) if all_formats else (OutputFormat.WAV16,),
            work_dir=Path(work),
            min_duration_s=1.0,
            max_duration_s=4 * 3600.0,
            options=resolve_options(RequestedOptions(limiter=limiter)),
        )
        gc.collect()  # the previous job's garbage is not this one's cost
        run: dict[str, float] = {}
        clock.runs.append(run)
        started = time.perf_counter()
        master_files(request, lambda stage, percent: None)
        total = time.perf_counter() - started
    # Per run, then the median: medians of parts taken from different runs need not
    # add up to the median total.
    run[OTHER] = total - sum(seconds for key, seconds in run.items() if "/" not in key)
    run[TOTAL] = total


def measure(
    target: Path, reference: Path, runs: int, *, all_formats: bool = False
) -> dict[str, dict[str, float]]:
    """Median seconds per stage key, "other" and "total", for each path."""
    clocks = {path: StageClock() for path in PATHS}
    for path in PATHS:  # warm-up, not instrumented: imports, FFT plans, the page cache
        run_job(target, reference, path, StageClock(), all_formats=all_formats)
    for index in range(runs):
        for path in PATHS if index % 2 == 0 else PATHS[::-1]:
            with instrumented(clocks[path]):
                run_job(target, reference, path, clocks[path], all_formats=all_formats)
    return {
        path: {
            key: statistics.median(run.get(key, 0.0) for run in clock.runs)
            for key in ordered_keys(clock.runs)
        }
        for path, clock in clocks.items()
    }


def ordered_keys(runs: list[dict[str, float]]) -> list[str]:
    """Stage keys in the order they ran, as a tree: each call right after its parent,
    before the parent's next sibling.

    A run's dict is in the order the calls finished: nested calls before their parent,
    siblings in the order they ran. A key sorts by where each of its ancestors finished
    (and then itself), so a parent, a prefix of its children's positions, comes first.
    """
    finished: list[str] = []
    for run in runs:
        finished.extend(key for key in run if key not in finished)

    def position(key: str) -> tuple[int, ...]:
        parts = key.split("/")
        prefixes = ("/".join(parts[: depth + 1]) for depth in range(len(parts)))
        return tuple(finished.index(prefix) for prefix in prefixes if prefix in finished)

    return sorted(finished, key=position)


def merged_keys(first: list[str], second: list[str]) -> list[str]:
    """``first``'s keys, with ``second``'s others placed before the key that follows
    them in ``second`` (the fidelity mode's limiter rows just before the outputs)."""
    merged = list(first)
    following: str | None = None
    for key in reversed(second):
        if key not in merged:
            merged.insert(merged.index(following) if following else len(merged), key)
        following = key
    return merged


def table(medians: dict[str, dict[str, float]], depth: int = DEFAULT_DEPTH) -> str:
    """Markdown: one row per stage, seconds and share of the job for each path."""
    summary = (TOTAL, OTHER)
    keys = merged_keys(
        [key for key in medians["default"] if key not in summary],
        [key for key in medians["matchering"] if key not in summary],
    )
    lines = [
        "| stage | default path | share | fidelity mode | share |",
        "|---|---|---|---|---|",
    ]
    for key in (key for key in keys if key.count("/") < depth):
        name = key.split("/")[-1]
        label = f"{LABELS.get(name, name)} (`{name}`)"
        if "/" in key:
            label = f"{'… ' * key.count('/')}of which {label}"
        lines.append(f"| {label} | {_cells(medians, key)} |")
    lines.append(f"| other (checks, conversions, glue) | {_cells(medians, OTHER)} |")
    lines.append(f"| **`master_files` in all** | {_cells(medians, TOTAL)} |")
    return "\n".join(lines)


def _cells(medians: dict[str, dict[str, float]], key: str) -> str:
    cells = []
    for path in PATHS:
        seconds = medians[path].get(key)
        if seconds is None:
            cells.append("| ")
        else:
            cells.append(f"{seconds:.3f} s | {100.0 * seconds / medians[path][TOTAL]:.0f} %")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path (median)")
    parser.add_argument(
        "--all-formats", action="store_true", help="write all four formats (as a job may)"
    )
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="levels of calls shown")
    args = parser.parse_args()
    medians = measure(args.target, args.reference, args.runs, all_formats=args.all_formats)
    print(table(medians, args.depth))


if __name__ == "__main__":
    main()
