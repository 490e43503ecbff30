"""``mastering master``: master local files in this process, no service involved.

The same pipeline (decoding, validation, engine, encoders) as the master function,
with a temporary work directory that is always removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    add_track_arguments,
    format_metrics,
    input_file,
)
from mastering.cli.progress import ProgressBar
from mastering.config import Settings
from mastering.formats import OutputFormat

EXAMPLES = """\
examples:
  mastering master song.wav --reference ref.flac -o song-mastered.wav
  mastering master song.mp3 --preset warm -o song-mastered.flac
  mastering master song.wav --preset loud --format wav24 -o master.wav
"""

_FORMAT_OF_EXTENSION = {
    ".wav": OutputFormat.WAV16,
    ".wave": OutputFormat.WAV16,
    ".flac": OutputFormat.FLAC,
    ".mp3": OutputFormat.MP3,
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "master",
        help="master local files directly, without the service",
        description=(
            "Master TARGET like REF (or like a preset) on this machine with the "
            "service's own pipeline, and write the result to OUT."
        ),
        epilog=f"{EXAMPLES}\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    add_track_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default=None,
        help="output format (default: from OUT's extension: .wav 16-bit, .flac, .mp3)",
    )
    parser.set_defaults(run=run)


def output_format(output: Path, requested: str | None) -> OutputFormat:
    if requested is not None:
        return OutputFormat(requested)
    found = _FORMAT_OF_EXTENSION.get(output.suffix.lower())
    if found is None:
        raise CliError(
            f"cannot tell the format from {output.name!r}; end it in .wav, .flac or .mp3, "
            "or give --format",
            EXIT_USAGE,
        )
    return found


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
    from mastering.pipeline import MasteringRequest, master_files
    from mastering.presets import PRESETS

    target = input_file(args.target, "target")
    reference = input_file(args.reference, "reference") if args.reference else None
    if args.preset is not None and args.preset not in PRESETS:
        raise CliError(
            f"there is no preset {args.preset!r}; choose one of {', '.join(PRESETS)}", EXIT_USAGE
        )
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
            preset_id=args.preset,
            outputs=(fmt,),
            work_dir=Path(work),
            min_duration_s=_duration_limit("MIN_DURATION_S", Settings.min_duration_s),
            max_duration_s=_duration_limit("MAX_DURATION_S", Settings.max_duration_s),
        )
        try:
            outcome = master_files(request, lambda stage, percent: bar.update(stage, percent))
        except MasteringError as error:
            bar.close()
            raise CliError(f"{error.code}: {error.message}") from None
        bar.update("done", 100)
        bar.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        # Moved in two steps so a reader of OUT never sees a half-written file.
        partial = output.with_name(f".{output.name}.partial")
        shutil.move(outcome.files[fmt], partial)
        os.replace(partial, output)
    print(f"{fmt:6} {output}")
    print(format_metrics(outcome.metrics, processing_s=round(time.monotonic() - started, 2)))
    return EXIT_OK
