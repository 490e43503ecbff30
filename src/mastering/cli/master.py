"""``mastering master``: master local files in this process, no service involved.

The same pipeline (decoding, validation, engine, encoders) as the master function,
with a temporary work directory that is always removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mastering.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    FORMAT_CHOICES,
    CliError,
    HelpFormatter,
    add_mastering_arguments,
    add_track_arguments,
    chosen_preset,
    exit_code_of,
    format_metrics,
    format_warnings,
    input_file,
    requested_options,
)
from mastering.cli.progress import ProgressBar
from mastering.config import Settings
from mastering.formats import INPUT_EXTENSIONS, OUTPUT_SPECS, OutputFormat

EXAMPLES = """\
examples:
  mastering master song.wav --reference ref.flac -o song-mastered.wav
  mastering master song.mp3 --preset Warm --loudness spotify -o song-mastered.flac
  mastering master song.wav --preset loud --format wav24 --true-peak -1.5 -o master.wav
  mastering master song.wav --reference ref.wav --limiter matchering -o as-matchering.wav
"""

# The formats a file name's extension fits; the first is what it means alone.
_FORMATS_OF_EXTENSION = {
    ".wav": (OutputFormat.WAV16, OutputFormat.WAV24),
    ".wave": (OutputFormat.WAV16, OutputFormat.WAV24),
    ".flac": (OutputFormat.FLAC,),
    ".mp3": (OutputFormat.MP3,),
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "master",
        help="master local files directly, without the service",
        description=(
            "Master TARGET like the --reference track (or a --preset) on this machine\n"
            "with the service's own pipeline and options, and write the result to OUT.\n"
            "Prints the result's loudness and true peak, and any warning."
        ),
        epilog=f"{EXAMPLES}\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    add_track_arguments(parser)
    parser.add_argument(
        "-o", "--output", metavar="OUT", type=Path, required=True, help="the file to write"
    )
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default=None,
        help="output format; must fit OUT's extension (.wav: wav16 or wav24, .flac, .mp3) "
        "(default: from the extension, .wav meaning wav16)",
    )
    add_mastering_arguments(parser)
    parser.set_defaults(run=run)


def output_format(output: Path, requested: str | None) -> OutputFormat:
    """The format OUT is written in: --format if it fits OUT's extension, else the
    extension's own."""
    extension = output.suffix.lower()
    fits = _FORMATS_OF_EXTENSION.get(extension)
    if requested is None:
        if fits is None:
            raise CliError(
                f"cannot tell the format from {output.name!r}; end it in .wav, .flac or "
                ".mp3, or give --format",
                EXIT_USAGE,
            )
        return fits[0]
    fmt = OutputFormat(requested)
    # An unknown extension (or none) is the user's choice; one that names another
    # audio format would mislabel the file.
    known = fits is not None or extension.lstrip(".") in INPUT_EXTENSIONS
    if known and (fits is None or fmt not in fits):
        raise CliError(
            f"--format {fmt} does not fit {output.name!r}: a {fmt} file ends in "
            f".{OUTPUT_SPECS[fmt].extension}",
            EXIT_USAGE,
        )
    return fmt


def _duration_limit(name: str, default: float) -> float:
    # The service's own limits and variable names (see mastering.config).
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise CliError(f"{name} must be a number of seconds, not {raw!r}", EXIT_USAGE) from None


def run(args: argparse.Namespace) -> int:
    from mastering.errors import MasteringError
    from mastering.options import resolve_options
    from mastering.pipeline import MasteringRequest, master_files

    preset = chosen_preset(args)
    options = resolve_options(
        requested_options(args), preset.defaults() if preset is not None else None
    )
    target = input_file(args.target, "target")
    reference = input_file(args.reference, "reference") if args.reference else None
    fmt = output_format(args.output, args.format)
    output: Path = args.output
    if output.exists() and output.is_dir():
        raise CliError(f"the output is a directory: {output}", EXIT_USAGE)
    if output.resolve() in {target.resolve(), reference.resolve() if reference else None}:
        raise CliError("the output would overwrite an input", EXIT_USAGE)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mastering-") as work, ProgressBar() as bar:
        request = MasteringRequest(
            target=target,
            reference=reference,
            preset_id=preset.id if preset is not None else None,
            outputs=(fmt,),
            work_dir=Path(work),
            min_duration_s=_duration_limit("MIN_DURATION_S", Settings.min_duration_s),
            max_duration_s=_duration_limit("MAX_DURATION_S", Settings.max_duration_s),
            options=options,
        )
        try:
            outcome = master_files(request, lambda stage, percent: bar.update(stage, percent))
        except MasteringError as error:
            bar.close()
            raise CliError(f"{error.code}: {error.message}", exit_code_of(error)) from None
        bar.update("done", 100)
        bar.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        # Moved in two steps so a reader of OUT never sees a half-written file.
        partial = output.with_name(f".{output.name}.partial")
        shutil.move(outcome.files[fmt], partial)
        os.replace(partial, output)
    print(f"{fmt:6} {output}")
    measured = outcome.measurements.get(fmt)
    files = (
        {str(fmt): {"lufs": measured.lufs, "true_peak_dbtp": measured.true_peak_dbtp}}
        if measured is not None
        else {}
    )
    elapsed = round(time.monotonic() - started, 2)
    print(format_metrics(outcome.metrics, processing_s=elapsed, files=files))
    for line in format_warnings("master", (w.to_dict() for w in outcome.warnings)):
        print(line, file=sys.stderr)
    return EXIT_OK
