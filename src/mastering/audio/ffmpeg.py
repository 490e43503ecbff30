"""Locating the ffmpeg binary and running it without a shell.

The master function's image carries a static ffmpeg at the path its settings give
(``FFMPEG_PATH``, read by ``mastering.config``); elsewhere the one of the
``imageio-ffmpeg`` wheel is used, else the one on PATH.

ffmpeg gets an empty environment: a static binary needs none, and variables such as
``FFREPORT`` (log files in the working directory) or ``AV_LOG_FORCE_COLOR`` (escape
codes in the stderr we parse) must not reach it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from mastering.errors import InternalError, ProcessingTimeout

logger = logging.getLogger(__name__)

# Everything ffmpeg needs; see the module's docstring.
_ENVIRONMENT: dict[str, str] = {"LC_ALL": "C"}

# "[mp3 @ 0x55d0c0a1b2c0] " and "[in#0 @ 0x...] " prefixes on ffmpeg log lines.
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg executable to run: ``explicit``, imageio-ffmpeg's, or PATH's."""
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg
    except ImportError:
        pass
    else:
        try:
            exe: str = imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            # The wheel is installed but its binary is missing (e.g. a wheel for another
            # platform was copied in); a system ffmpeg may still be there.
            logger.warning("imageio-ffmpeg is installed but has no usable ffmpeg binary")
        else:
            return exe
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    raise InternalError("ffmpeg is not available")


def run_ffmpeg(
    args: Sequence[str],
    *,
    ffmpeg_path: str | None,
    timeout_s: float,
    stdin_data: bytes | memoryview | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with ``args`` (everything after the executable) and capture its output.

    A non-zero exit is returned, not raised: callers know which failures are the user's
    file and which are ours. ``stdin_data`` is fed to ``pipe:0``; without it stdin is
    closed so ffmpeg can never block waiting on it.

    Raises ProcessingTimeout when ffmpeg runs past ``timeout_s`` (the process is killed)
    and InternalError when the executable cannot be started.
    """
    exe = find_ffmpeg(ffmpeg_path)
    command = [exe, *args]
    try:
        if stdin_data is None:
            return subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                check=False,
                env=_ENVIRONMENT,
            )
        return subprocess.run(
            command,
            input=stdin_data,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=_ENVIRONMENT,
        )
    except subprocess.TimeoutExpired as exc:
        logger.warning("ffmpeg timed out after %.0f s", timeout_s)
        raise ProcessingTimeout("Audio processing took too long") from exc
    except OSError as exc:
        logger.error("could not start ffmpeg at %s: %s", exe, exc)
        raise InternalError("ffmpeg is not available") from exc


def start_ffmpeg(
    args: Sequence[str],
    *,
    ffmpeg_path: str | None,
    stderr_path: os.PathLike[str],
    stdin: bool = True,
    stdout: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ffmpeg with ``pipe:0`` fed by our writes (``stdin``) and/or ``pipe:1`` read
    by us (``stdout``), for audio produced or consumed block by block.

    stderr goes to a file rather than a pipe: nobody reads it while we write, and a
    full pipe would stall ffmpeg and then us. Raises InternalError if it cannot start.
    """
    exe = find_ffmpeg(ffmpeg_path)
    try:
        with open(stderr_path, "wb") as stderr:
            return subprocess.Popen(
                [exe, *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=stderr,
                env=_ENVIRONMENT,
            )
    except OSError as exc:
        logger.error("could not start ffmpeg at %s: %s", exe, exc)
        Path(stderr_path).unlink(missing_ok=True)
        raise InternalError("ffmpeg is not available") from exc


def summarise_stderr(stderr: bytes, *, redact: Iterable[str] = ()) -> str:
    """ffmpeg's most telling error line, fit for a user: no paths, addresses or log prefixes.

    ffmpeg ends with generic lines ("Error opening input files: ...") that repeat the
    cause, so the last line left after dropping the ones naming a file is usually it.
    """
    text = stderr.decode("utf-8", errors="replace")
    for secret in redact:
        if secret:
            text = text.replace(secret, "")
    cleaned: list[str] = []
    for raw_line in text.splitlines():
        line = _LOG_PREFIX.sub("", raw_line.strip())
        if not line or "file:" in line or "/" in line:
            continue
        line = _ADDRESS.sub("", line)
        # "Error opening input files: Invalid data ..." -> "Invalid data ..."
        if ": " in line and line.lower().startswith("error"):
            line = line.split(": ", 1)[1]
        cleaned.append(line.strip())
    if not cleaned:
        return "the decoder reported an error"
    return cleaned[-1][:160]
