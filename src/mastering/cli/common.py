"""What the subcommands share: exit codes, errors, argument types, result naming, metrics.

Light on purpose: every subcommand module imports it while ``--help`` is built.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mastering.errors import InvalidRequest, MasteringError
from mastering.formats import OUTPUT_SPECS, OutputFormat
from mastering.options import (
    MAX_LOUDNESS_LUFS,
    MAX_TRUE_PEAK_DBTP,
    MIN_LOUDNESS_LUFS,
    MIN_TRUE_PEAK_DBTP,
    PLATFORM_LOUDNESS,
    Limiter,
    RequestedOptions,
    parse_mastering_options,
)
from mastering.presets import PRESETS, Preset, find_preset

EXIT_OK = 0
# The operation ran and failed: an internal error, a time limit, an unreachable server.
EXIT_FAILED = 1
# The command line, the environment or the input is wrong: bad arguments or settings,
# missing files, audio the engine refuses, a request the API refuses (argparse uses 2
# as well).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0    success
  1    failed: an internal error, a time limit, the service unreachable
  2    bad usage or input: arguments, settings, files, audio the engine refuses,
       a request the API refuses
  130  interrupted"""
FORMAT_CHOICES = [str(fmt) for fmt in OutputFormat]
# The command-line option behind each field of a ``mastering`` object.
MASTERING_OPTIONS = {
    "loudness": "--loudness",
    "true_peak_dbtp": "--true-peak",
    "intensity": "--intensity",
    "limiter": "--limiter",
}
PLATFORMS_HELP = ", ".join(f"{name} ({lufs:g})" for name, lufs in PLATFORM_LOUDNESS.items())


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


def exit_code_of(error: MasteringError) -> int:
    """2 when the input was refused (the service answers 4xx), 1 when the service failed."""
    return EXIT_USAGE if error.http_status < 500 else EXIT_FAILED


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """TARGET and exactly one of --reference / --preset, as `master` and `submit` take."""
    parser.add_argument("target", type=Path, help="the track to master")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", type=Path, help="a track that sounds the way you want")
    source.add_argument(
        "--preset",
        metavar="PRESET",
        help="a preset instead of a reference, by id or name in any case: "
        f"{', '.join(preset.name for preset in PRESETS.values())}",
    )


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_mastering_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mastering`` options of a job, as `master` and `submit` take them.

    Left out, each takes the preset's value (with --preset) or the service's default.
    """
    group = parser.add_argument_group("mastering options")
    group.add_argument(
        "--loudness",
        metavar="LUFS|PLATFORM|reference",
        help=f"integrated loudness of the master: LUFS ({MIN_LOUDNESS_LUFS:g} to "
        f"{MAX_LOUDNESS_LUFS:g}), 'reference' (the reference's own), or a platform: "
        f"{PLATFORMS_HELP} (default: reference, or the preset's loudness)",
    )
    group.add_argument(
        "--true-peak",
        type=number,
        metavar="DBTP",
        help=f"true-peak ceiling of every result, {MIN_TRUE_PEAK_DBTP:g} to "
        f"{MAX_TRUE_PEAK_DBTP:g} dBTP (default: -1, or the preset's)",
    )
    group.add_argument(
        "--intensity",
        type=number,
        metavar="0..1",
        help="share of the matched EQ applied: 0 keeps the target's own tonal balance, "
        "1 matches fully (default: 1, or the preset's)",
    )
    group.add_argument(
        "--limiter",
        metavar="|".join(str(limiter) for limiter in Limiter),
        help="true_peak (default) or matchering: matchering's own output, which sets "
        "its own loudness and ceiling, so it takes no --loudness or --true-peak",
    )


def chosen_preset(args: argparse.Namespace) -> Preset | None:
    """The --preset's preset (by id or name, any case); a usage error if there is none."""
    if args.preset is None:
        return None
    preset = find_preset(args.preset)
    if preset is None:
        raise CliError(
            f"there is no preset {args.preset!r}; choose one of {', '.join(PRESETS)}", EXIT_USAGE
        )
    return preset


def requested_options(args: argparse.Namespace) -> RequestedOptions:
    """The mastering options given on the command line, checked as the API checks them."""
    given = {
        "loudness": args.loudness,
        "true_peak_dbtp": args.true_peak,
        "intensity": args.intensity,
        "limiter": args.limiter,
    }
    try:
        return parse_mastering_options({k: v for k, v in given.items() if v is not None})
    except InvalidRequest as error:
        message = error.message
        # "mastering.true_peak_dbtp: ..." names the API's field; say the option instead.
        for field, option in MASTERING_OPTIONS.items():
            message = message.replace(f"mastering.{field}", option)
        raise CliError(message, EXIT_USAGE) from None


def options_body(requested: RequestedOptions) -> dict[str, Any]:
    """The ``mastering`` object of a POST /jobs body: only the options given."""
    fields: dict[str, Any] = {
        "loudness": requested.loudness,
        "true_peak_dbtp": requested.true_peak_dbtp,
        "intensity": requested.intensity,
        "limiter": None if requested.limiter is None else str(requested.limiter),
    }
    return {key: value for key, value in fields.items() if value is not None}


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


def format_metrics(
    metrics: Mapping[str, float | None],
    processing_s: float | None = None,
    files: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The job's metrics as a few aligned lines for a terminal.

    ``files`` maps a format to that result's own ``lufs`` and ``true_peak_dbtp``
    (as ``results.<format>`` of a job carries them); each measured file gets a line.
    """
    seconds = metrics.get("processing_s", processing_s)
    lines = [
        f"Loudness:   {_number(metrics.get('target_lufs'), 'LUFS')} -> "
        f"{_number(metrics.get('result_lufs'), 'LUFS')} "
        f"(reference {_number(metrics.get('reference_lufs'), 'LUFS')})",
        f"True peak:  {_number(metrics.get('result_true_peak_dbtp'), 'dBTP')}",
    ]
    for fmt, measured in (files or {}).items():
        lufs, peak = measured.get("lufs"), measured.get("true_peak_dbtp")
        if lufs is None and peak is None:
            continue
        lines.append(f"{fmt + ':':11} {_number(lufs, 'LUFS')}, true peak {_number(peak, 'dBTP')}")
    lines += [
        f"Duration:   {_number(metrics.get('duration_s'), 's')}",
        f"Time:       {_number(seconds, 's')} mastering",
    ]
    return "\n".join(lines)


def format_warnings(command: str, warnings: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per job warning (``{code, message}``), for stderr."""
    return [
        f"mastering {command}: warning: {warning.get('message', '')} ({warning.get('code', '')})"
        for warning in warnings
    ]
