"""What the subcommands share: exit codes, errors, argument types, result naming, metrics.

Light on purpose: every subcommand module imports it while ``--help`` is built.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from mastering.formats import OUTPUT_SPECS, OutputFormat

EXIT_OK = 0
# The operation ran and failed: a job failed, the audio was refused, a server is unreachable.
EXIT_FAILED = 1
# The command line or the environment is wrong (argparse uses 2 as well).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = "exit status: 0 success, 1 failed, 2 bad usage or input, 130 interrupted"
FORMAT_CHOICES = [str(fmt) for fmt in OutputFormat]


class CliError(Exception):
    """A failure to report as one line, without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples keep their line breaks; options show their defaults.

    Options whose default is None (secrets among them, resolved from the
    environment at run time) say where their value comes from in their own words,
    so ``--help`` never prints a key.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def env_default(name: str, fallback: object) -> str:
    """A default taken from ``$name`` when set; argparse converts it with the option's type,
    so a bad value is reported like a bad option."""
    value = os.environ.get(name, "").strip()
    return value or str(fallback)


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """TARGET and exactly one of --reference / --preset, as `master` and `submit` take."""
    parser.add_argument("target", type=Path, help="the track to master")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", type=Path, help="a track that sounds the way you want")
    source.add_argument("--preset", metavar="ID", help="a preset instead of a reference")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, not {port}")
    return port


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def input_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable, non-empty file; a usage error otherwise."""
    if not path.exists():
        raise CliError(f"{what} not found: {path}", EXIT_USAGE)
    if not path.is_file():
        raise CliError(f"{what} is not a file: {path}", EXIT_USAGE)
    if path.stat().st_size == 0:
        raise CliError(f"{what} is empty: {path}", EXIT_USAGE)
    if not os.access(path, os.R_OK):
        raise CliError(f"{what} cannot be read: {path}", EXIT_USAGE)
    return path


def result_name(target: Path, fmt: OutputFormat) -> str:
    """``<target stem>-mastered.wav``, ``-mastered-24bit.wav``, ``.flac``, ``.mp3``: the
    names the API's download links carry."""
    suffix = "-24bit" if fmt is OutputFormat.WAV24 else ""
    return f"{target.stem or 'track'}-mastered{suffix}.{OUTPUT_SPECS[fmt].extension}"


def _number(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def format_metrics(metrics: Mapping[str, float | None], processing_s: float | None = None) -> str:
    """The job's metrics as a few aligned lines for a terminal."""
    seconds = metrics.get("processing_s", processing_s)
    lines = [
        f"Loudness:   {_number(metrics.get('target_lufs'), 'LUFS')} -> "
        f"{_number(metrics.get('result_lufs'), 'LUFS')} "
        f"(reference {_number(metrics.get('reference_lufs'), 'LUFS')})",
        f"True peak:  {_number(metrics.get('result_true_peak_dbtp'), 'dBTP')}",
        f"Duration:   {_number(metrics.get('duration_s'), 's')}",
        f"Time:       {_number(seconds, 's')} mastering",
    ]
    return "\n".join(lines)
