"""``mastering stdio``: the MasterMatcherVST plugin's backend protocol, on this engine.

One JSON object per line in, one per line out:

    in:  {"user_track": PATH, "reference_track": PATH}
    out: {"status": "success", "output_path": PATH, "message": TEXT}
     or: {"status": "error", "message": TEXT}

Settings come from the environment names that backend used: OUTPUT_DIR (default
./output), LOG_LEVEL, LOG_FILE, MAX_PROCESSING_TIME (seconds per request, default
300), MAX_RETRIES (retries after an internal error, default 0), TEMP_DIR.

stdout carries the protocol and nothing else: logs go to LOG_FILE or stderr, and
the process's file descriptor 1 is pointed at stderr so that nothing a library or
ffmpeg prints can corrupt a response. Each request is mastered in a forked child
(``run_isolated``) that is killed at the time limit; a bad line gets an error line
and the loop carries on until EOF.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mastering.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    HelpFormatter,
)
from mastering.config import Settings
from mastering.formats import OutputFormat

logger = logging.getLogger("mastering.stdio")

# The plugin's backend wrote 24-bit WAV (matchering's pcm24) as processed_<name>.wav.
OUTPUT_FORMAT = OutputFormat.WAV24
Response = dict[str, str]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "stdio",
        help="serve the MasterMatcherVST plugin's JSON-lines protocol on stdin/stdout",
        description=(
            'Read {"user_track": PATH, "reference_track": PATH} lines on stdin and '
            'answer each with {"status": "success", "output_path": ..., "message": ...} '
            'or {"status": "error", "message": ...} on stdout, until EOF.'
        ),
        epilog=(
            "environment:\n"
            "  OUTPUT_DIR           where results go (default ./output)\n"
            "  LOG_LEVEL            DEBUG, INFO, WARNING or ERROR (default INFO)\n"
            "  LOG_FILE             log here instead of stderr\n"
            "  MAX_PROCESSING_TIME  seconds one request may take (default 300)\n"
            "  MAX_RETRIES          retries after an internal error (default 0)\n"
            "  TEMP_DIR             where temporary files go (default: the system's)\n\n"
            f"{EXIT_CODES_HELP}"
        ),
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class StdioSettings:
    output_dir: Path
    log_level: int
    log_file: Path | None
    max_processing_s: float
    max_retries: int
    temp_dir: Path | None
    min_duration_s: float = Settings.min_duration_s
    max_duration_s: float = Settings.max_duration_s


def settings_from_env(env: Mapping[str, str]) -> StdioSettings:
    def text(name: str) -> str:
        return env.get(name, "").strip()

    level_name = (text("LOG_LEVEL") or "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise CliError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level_name!r}")
    try:
        max_time = float(text("MAX_PROCESSING_TIME") or 300)
    except ValueError:
        raise CliError("MAX_PROCESSING_TIME must be a number of seconds") from None
    if not max_time > 0:
        raise CliError("MAX_PROCESSING_TIME must be more than 0 seconds")
    try:
        retries = int(text("MAX_RETRIES") or 0)
    except ValueError:
        raise CliError("MAX_RETRIES must be a whole number") from None
    if retries < 0:
        raise CliError("MAX_RETRIES must not be negative")
    return StdioSettings(
        output_dir=Path(text("OUTPUT_DIR") or "output"),
        log_level=level,
        log_file=Path(text("LOG_FILE")) if text("LOG_FILE") else None,
        max_processing_s=max_time,
        max_retries=retries,
        temp_dir=Path(text("TEMP_DIR")) if text("TEMP_DIR") else None,
    )


def _error(message: str) -> Response:
    return {"status": "error", "message": message}


def _lufs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} LUFS"


class StdioBackend:
    def __init__(self, settings: StdioSettings, out: TextIO) -> None:
        self._settings = settings
        self._out = out
        self._engine_loaded = False

    def serve(self, lines: Iterable[str]) -> None:
        for line in lines:
            if not line.strip():
                continue  # blank lines carry no request
            response = self.respond(line)
            self._out.write(json.dumps(response) + "\n")
            self._out.flush()

    def respond(self, line: str) -> Response:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            return _error(f"Invalid request: not JSON ({error.msg})")
        if not isinstance(request, dict):
            return _error("Invalid request: expected a JSON object")
        # The shape of the whole request first, then the files it names.
        for key in ("user_track", "reference_track"):
            value = request.get(key)
            if not isinstance(value, str) or not value.strip():
                return _error(f"Invalid request: '{key}' must be a file path")
        paths: dict[str, Path] = {}
        for key in ("user_track", "reference_track"):
            path = Path(request[key])
            if not path.is_file():
                what = "is not a file" if path.exists() else "not found"
                return _error(f"{key} {what}: {request[key]}")
            paths[key] = path
        try:
            return self._process(paths["user_track"], paths["reference_track"])
        except Exception as error:
            # One request's surprise must not end the plugin's backend.
            logger.exception("request failed unexpectedly")
            return _error(f"Internal error: {type(error).__name__}: {error}")

    def _process(self, target: Path, reference: Path) -> Response:
        from mastering.errors import InternalError, MasteringError, ProcessingTimeout
        from mastering.pipeline import preload_engine

        if not self._engine_loaded:
            # Outside the time budget: this import (about 2 s) is paid once per
            # process, and every forked child inherits it.
            preload_engine()
            self._engine_loaded = True
        started = time.monotonic()
        deadline = started + self._settings.max_processing_s
        attempt = 0
        while True:
            attempt += 1
            try:
                output, metrics = self._attempt(target, reference, deadline)
            except ProcessingTimeout:
                limit = self._settings.max_processing_s
                logger.warning("%s: over the time limit of %g s", target, limit)
                return _error(
                    f"Processing exceeded the time limit of {limit:g} s (MAX_PROCESSING_TIME)"
                )
            except InternalError as error:
                if attempt > self._settings.max_retries or time.monotonic() >= deadline:
                    return _error(error.message)
                logger.warning("attempt %d failed (%s); retrying", attempt, error.message)
                continue
            except MasteringError as error:
                return _error(error.message)
            elapsed = time.monotonic() - started
            logger.info("%s mastered in %.1f s -> %s", target, elapsed, output)
            return {
                "status": "success",
                "output_path": str(output),
                "message": (
                    f"Mastered in {elapsed:.1f} s: {_lufs(metrics.get('target_lufs'))} -> "
                    f"{_lufs(metrics.get('result_lufs'))} "
                    f"(reference {_lufs(metrics.get('reference_lufs'))})"
                ),
            }

    def _attempt(
        self, target: Path, reference: Path, deadline: float
    ) -> tuple[Path, dict[str, float | None]]:
        from mastering.pipeline import MasteringRequest, master_files
        from mastering.worker.isolation import run_isolated

        settings = self._settings
        if settings.temp_dir is not None:
            settings.temp_dir.mkdir(parents=True, exist_ok=True)
        # A fresh directory per attempt, named by us: never the user's file names.
        work = Path(tempfile.mkdtemp(prefix="mastering-stdio-", dir=settings.temp_dir))
        try:
            request = MasteringRequest(
                target=target,
                reference=reference,
                outputs=(OUTPUT_FORMAT,),
                work_dir=work,
                min_duration_s=settings.min_duration_s,
                max_duration_s=settings.max_duration_s,
            )

            def log_progress(stage: str, percent: int) -> None:
                logger.debug("%s: %s %d%%", target.name, stage, percent)

            outcome = run_isolated(
                lambda progress: master_files(request, progress),
                budget_s=deadline - time.monotonic(),
                on_progress=log_progress,
            )
            dest = settings.output_dir / f"processed_{target.stem or 'track'}.wav"
            settings.output_dir.mkdir(parents=True, exist_ok=True)
            # Via a hidden name in the output folder, then renamed: the plugin never
            # sees a half-copied file, even across file systems.
            partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
            try:
                shutil.move(outcome.files[OUTPUT_FORMAT], partial)
                os.replace(partial, dest)
            finally:
                partial.unlink(missing_ok=True)
            return dest.resolve(), outcome.metrics
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _configure_logging(settings: StdioSettings) -> None:
    handler: logging.Handler
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(settings.log_file, encoding="utf-8")
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


def _stdin_lines() -> Iterable[str]:
    # Bytes decoded leniently: a path in another encoding must not end the loop.
    for raw in iter(sys.stdin.buffer.readline, b""):
        yield raw.decode("utf-8", errors="surrogateescape")


def run(args: argparse.Namespace) -> int:
    from mastering.devstack.processes import prepare_forked_children

    try:
        settings = settings_from_env(os.environ)
    except CliError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    _configure_logging(settings)
    prepare_forked_children()
    out = _take_stdout()
    logger.info(
        "ready: results to %s, time limit %g s",
        settings.output_dir.resolve(),
        settings.max_processing_s,
    )
    try:
        StdioBackend(settings, out).serve(_stdin_lines())
    except BrokenPipeError:
        logger.error("the plugin closed its end of the pipe")
        return EXIT_FAILED
    logger.info("end of input")
    return EXIT_OK
