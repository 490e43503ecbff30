"""Locating the ffmpeg binary and running it without a shell.

The master function's image carries a static ffmpeg at the path its settings give
(``FFMPEG_PATH``, read by ``mastering.config``); elsewhere the one of the
``imageio-ffmpeg`` wheel is used, else the one on PATH.

ffmpeg gets an empty environment: a static binary needs none, and variables such as
``FFREPORT`` (log files in the working directory) or ``AV_LOG_FORCE_COLOR`` (escape
codes in the stderr we parse) must not reach it. It is also told to die with the
process that started it (see ``_PREEXEC``).

There is no ffprobe in the image, so ``probe_audio`` reads the stream description
``ffmpeg -i`` prints, as imageio-ffmpeg itself does for video.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mastering.errors import InternalError, OutOfDisk, ProcessingTimeout, is_out_of_disk
from mastering.parent_death import SUPPORTED as PARENT_DEATH_SUPPORTED
from mastering.parent_death import die_with_parent

logger = logging.getLogger(__name__)

# Everything ffmpeg needs; see the module's docstring.
_ENVIRONMENT: dict[str, str] = {"LC_ALL": "C"}

# "[mp3 @ 0x55d0c0a1b2c0] " and "[in#0 @ 0x...] " prefixes on ffmpeg log lines.
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")

# ffmpeg dies with the process that started it. The mastering child's process group
# is killed by ``run_isolated`` on every path it sees, but not when that parent is
# itself gone (a Lambda runtime killed at the function's timeout, ``mastering master``
# killed outright, a local-stack worker's group killed while the child leads its own):
# then an ffmpeg decoding an hour of audio would write on into the /tmp the next job
# needs.
_PREEXEC = die_with_parent if PARENT_DEATH_SUPPORTED else None


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
                preexec_fn=_PREEXEC,
            )
        return subprocess.run(
            command,
            input=stdin_data,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=_ENVIRONMENT,
            preexec_fn=_PREEXEC,
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
    full pipe would stall ffmpeg and then us. Raises InternalError if it cannot start
    (OutOfDisk if not even its log could be created).
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
                preexec_fn=_PREEXEC,
            )
    except OSError as exc:
        Path(stderr_path).unlink(missing_ok=True)
        if is_out_of_disk(exc):
            raise OutOfDisk() from exc
        logger.error("could not start ffmpeg at %s: %s", exe, exc)
        raise InternalError("ffmpeg is not available") from exc


def stderr_says_out_of_disk(stderr: bytes) -> bool:
    """Whether ffmpeg failed because the file system it wrote to was full."""
    return b"No space left on device" in stderr or b"Disk quota exceeded" in stderr


@dataclass(frozen=True)
class AudioStream:
    """The first audio stream of an input as ffmpeg describes it before decoding."""

    sample_rate: int
    # None when ffmpeg names a layout we do not know (never mono or stereo).
    channels: int | None
    # The container's duration, or None.
    duration_s: float | None
    # Whether ffmpeg guessed that duration from the first frames' bitrate (raw AAC, MP3
    # without a length header): such a guess can be off by a good part.
    duration_estimated: bool = False


@dataclass(frozen=True)
class Probe:
    """What ``ffmpeg -i`` said about an input: whether it could open it at all, and
    its first audio stream if it has one."""

    opened: bool
    audio: AudioStream | None


# The lines of ffmpeg's input description, indented by exactly two spaces. Metadata
# (which the upload controls, keys included) is indented deeper, and its continuation
# lines start with ": ", so a tag cannot pose as a stream or a duration.
_INPUT_LINE = re.compile(rb"^Input #0, ", re.MULTILINE)
_DURATION_LINE = re.compile(rb"^  Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)", re.MULTILINE)
_AUDIO_LINE = re.compile(
    rb"^  Stream #0:\d+(?:\[[^\]\n]*\])?(?:\([^)\n]*\))?: Audio: ([^\n]*)$", re.MULTILINE
)
_RATE_AND_LAYOUT = re.compile(rb", (\d+) Hz, ([^,\n]+)")
# Named layouts (libavutil/channel_layout.c) that are not "N channels" or "a.b[.c]".
_NAMED_LAYOUTS = {
    "mono": 1,
    "stereo": 2,
    "downmix": 2,
    "binaural": 2,
    "quad": 4,
    "hexagonal": 6,
    "octagonal": 8,
    "cube": 8,
    "hexadecagonal": 16,
}
_COUNTED_LAYOUT = re.compile(r"^(\d+) channels?\b")
_DOTTED_LAYOUT = re.compile(r"^(\d+(?:\.\d+)+)(?:\(.*\))?$")
_AMBISONIC_LAYOUT = re.compile(r"^ambisonic (\d+)\b")


def layout_channels(layout: str) -> int | None:
    """How many channels an ffmpeg layout name has: "stereo" 2, "5.1" 6, "7.1.4" 12,
    "3 channels" 3, "ambisonic 1" 4; None for a name we do not know."""
    name = layout.strip()
    base = name.split("(", 1)[0].strip()
    if base in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[base]
    if match := _COUNTED_LAYOUT.match(name):
        return int(match.group(1))
    if match := _DOTTED_LAYOUT.match(name):
        return sum(int(part) for part in match.group(1).split("."))
    if match := _AMBISONIC_LAYOUT.match(name):
        order = int(match.group(1))
        return (order + 1) ** 2
    return None


def parse_probe(stderr: bytes) -> Probe:
    """Read ``ffmpeg -i``'s description of input #0 (see ``_INPUT_LINE``)."""
    opened = _INPUT_LINE.search(stderr) is not None
    duration_s: float | None = None
    if (duration := _DURATION_LINE.search(stderr)) is not None and duration.group(1):
        hours, minutes, seconds = duration.groups()
        duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    audio = _AUDIO_LINE.search(stderr)
    if audio is None:
        return Probe(opened=opened, audio=None)
    shape = _RATE_AND_LAYOUT.search(audio.group(1))
    if shape is None:
        return Probe(opened=opened, audio=None)
    layout = shape.group(2).decode("ascii", errors="replace")
    return Probe(
        opened=opened,
        audio=AudioStream(
            sample_rate=int(shape.group(1)),
            channels=layout_channels(layout),
            duration_s=duration_s,
            duration_estimated=b"Estimating duration from bitrate" in stderr,
        ),
    )


def probe_audio(input_args: Sequence[str], *, ffmpeg_path: str | None, timeout_s: float) -> Probe:
    """What ffmpeg sees in an input (``input_args`` end with ``-i``'s), from its headers,
    decoding nothing: ``ffmpeg -i`` with no output describes the input and exits."""
    result = run_ffmpeg(
        ["-nostdin", "-hide_banner", "-loglevel", "info", *input_args],
        ffmpeg_path=ffmpeg_path,
        timeout_s=timeout_s,
    )
    probe = parse_probe(result.stderr)
    if probe.audio is None:
        logger.warning("ffmpeg found no usable audio stream: %s", result.stderr[-2000:])
    return probe


def summarise_stderr(stderr: bytes, *, redact: Iterable[str] = ()) -> str:
    """ffmpeg's most telling error line, for the log: no paths, addresses or log
    prefixes. (Users never see it: their messages are ours.)

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
