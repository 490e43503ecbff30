"""``mastering stdio``: the MasterMatcherVST plugin's backend protocol, on this engine.

JSON requests on stdin, one JSON reply per request on stdout (see
``stdio_protocol``); a request may span lines, share a line, or arrive in pieces
(``json_stream``). Settings come from the environment names that backend used, and
from a ``.env`` file found as its ``load_dotenv()`` found one (variables already in
the environment win).

stdout carries the protocol and nothing else: logs go to LOG_FILE or stderr, and
the process's file descriptor 1 is pointed at stderr so that nothing a library or
ffmpeg prints can corrupt a reply. Settings and folders are checked before the
first request: a backend that could only fail says so at once, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from mastering.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, HelpFormatter
from mastering.cli.stdio_backend import StdioBackend, StdioSettings
from mastering.options import (
    MAX_LOUDNESS_LUFS,
    MAX_TRUE_PEAK_DBTP,
    MIN_LOUDNESS_LUFS,
    MIN_TRUE_PEAK_DBTP,
    PLATFORM_LOUDNESS,
)

logger = logging.getLogger("mastering.stdio")

# The original backend's defaults (its code and .env.example).
DEFAULT_OUTPUT_DIR = "processed"
DEFAULT_MAX_PROCESSING_S = 300.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_LOG_LEVEL = "INFO"
_READ_SIZE = 65536

_PLATFORMS = textwrap.fill(
    ", ".join(f"{name} ({lufs:g})" for name, lufs in PLATFORM_LOUDNESS.items()),
    width=80,
    initial_indent=" " * 20,
    subsequent_indent=" " * 20,
)
DESCRIPTION = f"""\
Serve the MasterMatcherVST plugin: read JSON requests on stdin until EOF and answer
each with one line on stdout. A request may span several lines, share a line with
others or arrive in pieces; input that is not JSON gets one error reply, then
reading resumes at the next line that starts with '{{'.

requests:
  {{"user_track": PATH, "reference_track": PATH}}
  {{"user_track": PATH, "preset": "Warm"}}       a preset's id or name, any case
  either may add "mastering": {{"loudness": -14, "true_peak_dbtp": -1,
                                "intensity": 0.7, "limiter": "true_peak"}}
    loudness        LUFS ({MIN_LOUDNESS_LUFS:g} to {MAX_LOUDNESS_LUFS:g}), "reference", or a \
platform:
{_PLATFORMS}
    true_peak_dbtp  ceiling, {MIN_TRUE_PEAK_DBTP:g} to {MAX_TRUE_PEAK_DBTP:g} dBTP (default -1)
    intensity       share of the matched EQ applied, 0 to 1 (default 1)
    limiter         true_peak (default) or matchering (matchering's own output;
                    takes no loudness or true_peak_dbtp)
replies:
  {{"status": "success", "output_path": PATH, "message": TEXT}}
  {{"status": "error", "message": TEXT}}
Results are 24-bit WAVs named processed_<track>.wav in OUTPUT_DIR; a name already
taken gets -2, -3, ... (nothing is overwritten)."""

EPILOG = f"""\
environment (also read from a .env file in this folder or above it; variables
already set win):
  OUTPUT_DIR           where results go (default {DEFAULT_OUTPUT_DIR})
  LOG_LEVEL            DEBUG, INFO, WARNING or ERROR (default {DEFAULT_LOG_LEVEL})
  LOG_FILE             log here instead of stderr; every error is logged
  MAX_PROCESSING_TIME  seconds one request may take, retries included (default \
{DEFAULT_MAX_PROCESSING_S:g})
  MAX_RETRIES          retries after an internal error, not after bad input \
(default {DEFAULT_MAX_RETRIES})
  TEMP_DIR             where temporary files go (default: the system's)

exit status:
  0    end of input
  1    the plugin closed stdout
  2    bad settings: a bad value, or an OUTPUT_DIR, TEMP_DIR or LOG_FILE that
       cannot be written
  130  interrupted"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "stdio",
        help="serve the MasterMatcherVST plugin's JSON protocol on stdin/stdout",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)


def load_dotenv_file() -> Path | None:
    """The original backend's ``load_dotenv()``: the nearest .env from the working
    directory up; values already in the environment are kept."""
    from dotenv import find_dotenv, load_dotenv

    found = find_dotenv(usecwd=True)
    if not found:
        return None
    load_dotenv(found, override=False)
    return Path(found)


def settings_from_env(env: Mapping[str, str]) -> StdioSettings:
    def text(name: str) -> str:
        return env.get(name, "").strip()

    level_name = (text("LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise CliError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level_name!r}", EXIT_USAGE
        )
    raw_time = text("MAX_PROCESSING_TIME")
    try:
        max_time = float(raw_time or DEFAULT_MAX_PROCESSING_S)
    except ValueError:
        raise CliError(
            f"MAX_PROCESSING_TIME must be a number of seconds, not {raw_time!r}", EXIT_USAGE
        ) from None
    if not 0 < max_time < float("inf"):
        raise CliError("MAX_PROCESSING_TIME must be more than 0 seconds", EXIT_USAGE)
    raw_retries = text("MAX_RETRIES")
    try:
        retries = int(raw_retries or DEFAULT_MAX_RETRIES)
    except ValueError:
        raise CliError(
            f"MAX_RETRIES must be a whole number, not {raw_retries!r}", EXIT_USAGE
        ) from None
    if retries < 0:
        raise CliError("MAX_RETRIES must not be negative", EXIT_USAGE)
    return StdioSettings(
        output_dir=Path(text("OUTPUT_DIR") or DEFAULT_OUTPUT_DIR),
        log_level=level,
        log_file=Path(text("LOG_FILE")) if text("LOG_FILE") else None,
        max_processing_s=max_time,
        max_retries=retries,
        temp_dir=Path(text("TEMP_DIR")) if text("TEMP_DIR") else None,
    )


def writable_folder(path: Path, setting: str) -> Path:
    """``path``, created if missing, once a file has been written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CliError(f"{setting} is not a folder: {path}", EXIT_USAGE) from None
    except OSError as error:
        raise CliError(
            f"{setting} {path} cannot be created: {error.strerror or error}", EXIT_USAGE
        ) from None
    try:
        # Tried, not deduced from permission bits: root, ACLs and read-only mounts
        # all make os.access guess wrong.
        fd, probe = tempfile.mkstemp(prefix=".mastering-write-check-", dir=path)
    except OSError as error:
        raise CliError(
            f"{setting} {path} cannot be written to: {error.strerror or error}", EXIT_USAGE
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def configure_logging(settings: StdioSettings) -> None:
    handler: logging.Handler
    if settings.log_file is not None:
        try:
            settings.log_file.parent.mkdir(parents=True, exist_ok=True)
            # Paths in another encoding are logged escaped, never lost to an error.
            handler = logging.FileHandler(
                settings.log_file, encoding="utf-8", errors="backslashreplace"
            )
        except OSError as error:
            raise CliError(
                f"LOG_FILE {settings.log_file} cannot be written: {error.strerror or error}",
                EXIT_USAGE,
            ) from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def _take_stdout() -> TextIO:
    """A private handle on stdout for the protocol; fd 1 itself then goes to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Left open on purpose: it is the protocol channel for the rest of the process.
    return open(protocol_fd, "w", encoding="utf-8", newline="\n")


def _stdin_chunks() -> Iterator[bytes]:
    # Whatever has arrived, not a line: a request need not end with a line break.
    fd = sys.stdin.fileno()
    while chunk := os.read(fd, _READ_SIZE):
        yield chunk


def run(args: argparse.Namespace) -> int:
    from mastering.devstack.processes import prepare_forked_children

    dotenv = load_dotenv_file()
    settings = settings_from_env(os.environ)
    configure_logging(settings)
    try:
        writable_folder(settings.output_dir, "OUTPUT_DIR")
        if settings.temp_dir is not None:
            writable_folder(settings.temp_dir, "TEMP_DIR")
    except CliError as error:
        if settings.log_file is not None:
            # The plugin may show only the log; on stderr the one line below suffices.
            logger.error("cannot start: %s", error)
        raise
    prepare_forked_children()
    out = _take_stdout()
    logger.info(
        "ready: results to %s, time limit %g s, %d retries%s",
        settings.output_dir.resolve(),
        settings.max_processing_s,
        settings.max_retries,
        f", settings from {dotenv}" if dotenv else "",
    )
    try:
        StdioBackend(settings, out).serve(_stdin_chunks())
    except BrokenPipeError:
        logger.error("the plugin closed its end of the pipe")
        return EXIT_FAILED
    logger.info("end of input")
    return EXIT_OK
