"""The stdio backend's loop: decode requests, master each in a forked child, reply.

Every request gets exactly one reply, and every error reply is logged with the
request it answers. Each attempt runs in a child (``run_isolated``) that is killed
at the request's time limit; internal errors (a crash, the kernel's out-of-memory
kill, a surprise in the engine) are retried up to ``max_retries`` times within that
limit, while a refusal of the input (bad audio, a missing file) is answered at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mastering.cli.json_stream import Garbage, Item, JsonStream
from mastering.cli.stdio_protocol import (
    Reply,
    RequestRefused,
    TrackRequest,
    check_files,
    describe,
    error_reply,
    parse_request,
    success_reply,
)
from mastering.config import Settings
from mastering.formats import OutputFormat

if TYPE_CHECKING:
    from mastering.jobs.model import Stage
    from mastering.pipeline import MasteringOutcome, MasteringRequest
    from mastering.worker.runner import Isolator

    MasterFunction = Callable[[MasteringRequest, Callable[[Stage, int], None]], MasteringOutcome]

logger = logging.getLogger("mastering.stdio")

# The plugin's backend wrote 24-bit WAV (matchering's pcm24) as processed_<name>.wav.
OUTPUT_FORMAT = OutputFormat.WAV24
OUTPUT_PREFIX = "processed_"
# processed_song.wav, processed_song-2.wav, ...: enough for any one folder.
MAX_NAME_TRIES = 10_000


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


def claim_output_path(folder: Path, stem: str) -> Path:
    """A new, empty file ``processed_<stem>.wav`` (or ``-2``, ``-3``, ...) in ``folder``.

    Created exclusively (O_EXCL), so neither an earlier result nor another backend
    writing to the same folder is ever overwritten.
    """
    for number in range(1, MAX_NAME_TRIES + 1):
        suffix = "" if number == 1 else f"-{number}"
        candidate = folder / f"{OUTPUT_PREFIX}{stem}{suffix}.wav"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"no free name for {OUTPUT_PREFIX}{stem}.wav in {folder}")


def _level(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def success_message(request: TrackRequest, outcome: MasteringOutcome, elapsed_s: float) -> str:
    metrics = outcome.metrics
    measured = outcome.measurements.get(OUTPUT_FORMAT)
    lufs = measured.lufs if measured is not None else metrics.get("result_lufs")
    peak = measured.true_peak_dbtp if measured is not None else metrics.get("result_true_peak_dbtp")
    source = (
        f"preset {request.preset.name}"
        if request.preset is not None
        else f"reference {_level(metrics.get('reference_lufs'), 'LUFS')}"
    )
    message = (
        f"Mastered in {elapsed_s:.1f} s: {_level(lufs, 'LUFS')}, true peak "
        f"{_level(peak, 'dBTP')} (was {_level(metrics.get('target_lufs'), 'LUFS')}; {source})"
    )
    for warning in outcome.warnings:
        message += f" Warning: {warning.message}"
    return message


class StdioBackend:
    def __init__(
        self,
        settings: StdioSettings,
        out: TextIO,
        master: MasterFunction | None = None,
        isolate: Isolator | None = None,
    ) -> None:
        self._settings = settings
        self._out = out
        self._master = master
        # Where an attempt runs: a forked child with a deadline, unless a test says.
        self._isolate = isolate
        self._engine_loaded = False
        self._count = 0

    def serve(self, chunks: Iterable[bytes]) -> None:
        """Answer every request in ``chunks`` (stdin as it is read), until they end."""
        stream = JsonStream()
        for chunk in chunks:
            for item in stream.feed(chunk):
                self._answer(item)
        for item in stream.close():
            self._answer(item)

    def _answer(self, item: Item) -> None:
        self._count += 1
        if isinstance(item, Garbage):
            reply = error_reply(f"Invalid request: not JSON ({item.reason})")
            context = repr(item.excerpt)
        else:
            reply = self.respond(item.value)
            context = describe(item.value)
        if reply["status"] == "error":
            message = reply["message"]
            logger.error("request %d failed: %s; request: %s", self._count, message, context)
        self._out.write(json.dumps(reply) + "\n")
        self._out.flush()

    def respond(self, data: Any) -> Reply:
        try:
            request = parse_request(data)
            check_files(request)
        except RequestRefused as error:
            return error_reply(error.message)
        logger.info("request %d: %s", self._count, describe(data))
        try:
            return self._process(request)
        except Exception as error:
            # One request's surprise must not end the plugin's backend.
            logger.exception("request %d failed unexpectedly", self._count)
            return error_reply(f"Internal error: {type(error).__name__}: {error}")

    def _process(self, request: TrackRequest) -> Reply:
        from mastering.errors import InternalError, MasteringError, ProcessingTimeout
        from mastering.pipeline import preload_engine

        if not self._engine_loaded:
            # Outside the time budget: this import (about 2 s) is paid once per
            # process, and every forked child inherits it.
            preload_engine()
            self._engine_loaded = True
        limit = self._settings.max_processing_s
        started = time.monotonic()
        deadline = started + limit
        attempts = self._settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                output, outcome = self._attempt(request, deadline)
            except ProcessingTimeout:
                return error_reply(
                    f"Processing exceeded the time limit of {limit:g} s (MAX_PROCESSING_TIME)"
                )
            except InternalError as error:
                if attempt == attempts or time.monotonic() >= deadline:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    return error_reply(f"{error.message}{tries}")
                logger.warning(
                    "request %d: attempt %d of %d failed (%s); retrying",
                    self._count,
                    attempt,
                    attempts,
                    error.message,
                )
                continue
            except MasteringError as error:
                return error_reply(error.message)
            elapsed = time.monotonic() - started
            logger.info("request %d: mastered in %.1f s -> %s", self._count, elapsed, output)
            return success_reply(output, success_message(request, outcome, elapsed))
        raise AssertionError("unreachable: the last attempt returns")

    def _attempt(self, request: TrackRequest, deadline: float) -> tuple[Path, MasteringOutcome]:
        from mastering.pipeline import MasteringRequest, master_files
        from mastering.worker.isolation import run_isolated

        settings = self._settings
        master = self._master or master_files
        isolate = self._isolate or run_isolated
        if settings.temp_dir is not None:
            settings.temp_dir.mkdir(parents=True, exist_ok=True)
        # A fresh directory per attempt, named by us: never the user's file names.
        work = Path(tempfile.mkdtemp(prefix="mastering-stdio-", dir=settings.temp_dir))
        try:
            pipeline_request = MasteringRequest(
                target=request.user_track,
                reference=request.reference_track,
                preset_id=request.preset.id if request.preset is not None else None,
                outputs=(OUTPUT_FORMAT,),
                work_dir=work,
                min_duration_s=settings.min_duration_s,
                max_duration_s=settings.max_duration_s,
                options=request.options,
            )
            name = request.user_track.name

            def log_progress(stage: str, percent: int) -> None:
                logger.debug("%s: %s %d%%", name, stage, percent)

            outcome = isolate(
                lambda progress: master(pipeline_request, progress),
                budget_s=deadline - time.monotonic(),
                on_progress=log_progress,
            )
            return self._publish(outcome.files[OUTPUT_FORMAT], request.user_track), outcome
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _publish(self, result: Path, target: Path) -> Path:
        """Move the result into OUTPUT_DIR under a name of its own."""
        folder = self._settings.output_dir
        # First into a hidden file in the output folder (a copy, across file systems),
        # then renamed onto the claimed name: the plugin never sees a half-written file.
        partial = folder / f".{OUTPUT_PREFIX}{uuid.uuid4().hex}.partial"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(result, partial)
            dest = claim_output_path(folder, target.stem or "track")
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest.resolve()
