"""`mastering stdio`, the MasterMatcherVST plugin's backend, as the plugin runs it:
a child process spoken to in JSON over its stdin and stdout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.audio_factory import tone_mix, write_wav

pytestmark = pytest.mark.slow

RATE = 44_100
# A guard against a hung backend, not a performance check.
ANSWER_DEADLINE_S = 120.0
# How long a backend that answers early (a half request, garbage it should wait out)
# is given to do so: far more than it takes to read and reply to a line here.
EARLY_ANSWER_WINDOW_S = 1.0
# MasterMatcherVST's python/.env.example, as written (comments after values included).
ORIGINAL_ENV_EXAMPLE = """\
# MasterMatcher Python Backend Configuration

# Output directory for processed audio files
OUTPUT_DIR=processed

# Log configuration
LOG_LEVEL=INFO
LOG_FILE=mastermatcher.log

# Processing settings
MAX_PROCESSING_TIME=300  # Maximum processing time in seconds
TEMP_DIR=temp

# Monitoring settings
MONITOR_INTERVAL=1  # Monitoring interval in seconds
MAX_RETRIES=3  # Maximum number of retries for failed operations

# API settings (if using REST API)
API_HOST=127.0.0.1
API_PORT=8000

# Security settings
SECRET_KEY=your-secret-key-here  # Change this in production
JWT_EXPIRATION=3600  # Token expiration time in seconds

# Debug settings
DEBUG=False
PROFILE=False
"""
SETTINGS = ("OUTPUT_DIR", "TEMP_DIR", "LOG_FILE", "LOG_LEVEL", "MAX_PROCESSING_TIME", "MAX_RETRIES")


def plugin_env(**env: str) -> dict[str, str]:
    """This environment without any of the backend's settings, plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if k not in SETTINGS}, **env}


class StdioBackend:
    """The backend process and the plugin's side of the protocol."""

    def __init__(self, workdir: Path, *, own_settings: bool = True, **env: str) -> None:
        """Started in ``workdir``; with ``own_settings`` its folders and log are set in
        the environment, without it the backend finds its own (a .env, its defaults)."""
        self.output_dir = workdir / "output"
        self.temp_dir = workdir / "tmp"
        self.log_file = workdir / "backend.log"
        self._pending = b""
        paths = {
            "OUTPUT_DIR": str(self.output_dir),
            "TEMP_DIR": str(self.temp_dir),
            "LOG_FILE": str(self.log_file),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mastering.cli", "stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=plugin_env(**(paths if own_settings else {}), **env),
            start_new_session=True,
        )

    def write(self, data: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data.encode())
        self.process.stdin.flush()

    def send(self, line: str) -> dict[str, Any]:
        """Write one line and read the one line that answers it."""
        self.write(line + "\n")
        return self.reply()

    def reply(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self._read_line())
        return answer

    def assert_silent(self) -> None:
        """No answer comes, though one would have had time to."""
        assert self.process.stdout is not None
        ready = select.select([self.process.stdout.fileno()], [], [], EARLY_ANSWER_WINDOW_S)[0]
        assert not ready, "the backend answered early"
        assert not self._pending, "the backend answered early"

    def ask(self, user_track: Path | str, reference_track: Path | str) -> dict[str, Any]:
        return self.send(
            json.dumps({"user_track": str(user_track), "reference_track": str(reference_track)})
        )

    def _read_line(self) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + ANSWER_DEADLINE_S
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                pytest.fail(f"no answer from the backend; its log:\n{self.log()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"the backend closed stdout; its log:\n{self.log()}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else "(none)"

    def finish(self) -> int:
        """Close stdin (EOF) and return the exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tracks")
    return {
        "target": write_wav(
            folder / "my take.wav", tone_mix(6.0, RATE, seed=1, peak_dbfs=-18), RATE
        ),
        "reference": write_wav(folder / "ref.wav", tone_mix(6.0, RATE, seed=2, peak_dbfs=-1), RATE),
    }


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioBackend]:
    running = StdioBackend(tmp_path_factory.mktemp("backend"))
    yield running
    running.kill()


def assert_serving(backend: StdioBackend, tracks: dict[str, Path]) -> None:
    """The backend still answers a good request with a result."""
    answer = backend.ask(tracks["target"], tracks["reference"])
    assert answer["status"] == "success", answer
    assert Path(answer["output_path"]).is_file()


def test_valid_request_gets_a_mastered_file(backend: StdioBackend, tracks: dict[str, Path]) -> None:
    # When the plugin asks for a target matched to a reference
    answer = backend.ask(tracks["target"], tracks["reference"])

    # Then the answer is a success naming a 24-bit WAV of the target's length in OUTPUT_DIR
    assert answer["status"] == "success", answer
    assert set(answer) == {"status", "output_path", "message"}
    output = Path(answer["output_path"])
    assert output.parent == backend.output_dir.resolve()
    assert re.fullmatch(r"processed_my take(-\d+)?\.wav", output.name)
    info = sf.info(output)
    assert info.subtype == "PCM_24"
    assert info.frames == sf.info(tracks["target"]).frames
    # And the message gives the result's loudness and true peak
    assert re.search(r"-?\d+\.\d LUFS, true peak -?\d+\.\d dBTP", answer["message"]), answer
    # And no temporary files are left behind
    assert list(backend.temp_dir.iterdir()) == []


def test_missing_file_gets_an_error_line(backend: StdioBackend, tracks: dict[str, Path]) -> None:
    # When the reference does not exist
    answer = backend.ask(tracks["target"], "/nowhere/reference.wav")
    # Then the answer is an error naming it
    assert answer == {
        "status": "error",
        "message": "reference_track not found: /nowhere/reference.wav",
    }
    # And the next request is still served
    assert_serving(backend, tracks)


def follow_up(tracks: dict[str, Path]) -> str:
    """A well-formed request answered at once: its reference does not exist."""
    return json.dumps({"user_track": str(tracks["target"]), "reference_track": "/nowhere/r.wav"})


def assert_follow_up_answered(backend: StdioBackend) -> None:
    assert backend.reply() == {
        "status": "error",
        "message": "reference_track not found: /nowhere/r.wav",
    }


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("this is not json\n", "not JSON (Expecting value at line 1 column 1)"),
        ('{"user_track": "a.wav"\n', "not JSON (Expecting ',' delimiter at line 2 column 1)"),
        (
            '{\n  "user_track": "a.wav",\n  "reference_track": b.wav\n}\n',
            "not JSON (Expecting value at line 3 column 22)",
        ),
        ("[1, 2]\n", "expected a JSON object"),
        ('{"user_track": "a.wav"}\n', "'reference_track' must be a file path"),
        ('{"user_track": 3, "reference_track": "b.wav"}\n', "'user_track' must be a file path"),
        ('{"user_track": "a.wav", "reference_track": "b.wav", "preset": "warm"}\n', "not both"),
        ('{"user_track": "a.wav", "preset": "Polka"}\n', "there is no preset 'Polka'"),
        (
            '{"user_track": "a.wav", "preset": "warm", "mastering": {"intensity": 2}}\n',
            "mastering.intensity: must be between 0 and 1",
        ),
    ],
)
def test_a_bad_request_gets_one_error_and_the_next_is_answered(
    backend: StdioBackend, tracks: dict[str, Path], bad: str, reason: str
) -> None:
    # When the plugin sends something that is not a valid request, then a valid one
    backend.write(bad + follow_up(tracks) + "\n")
    # Then the first answer is one error saying what is wrong
    error = backend.reply()
    assert error["status"] == "error"
    assert error["message"].startswith("Invalid request: ")
    assert reason in error["message"]
    # And the next answer is the valid request's
    assert_follow_up_answered(backend)


def test_a_pretty_printed_request_gets_one_answer(
    backend: StdioBackend, tracks: dict[str, Path]
) -> None:
    # When the plugin sends one request written over several lines
    request = {"user_track": str(tracks["target"]), "reference_track": str(tracks["reference"])}
    backend.write(json.dumps(request, indent=4) + "\n")
    # Then it is mastered, and that is the only answer
    answer = backend.reply()
    assert answer["status"] == "success", answer
    backend.assert_silent()


def test_requests_sharing_a_line_or_split_across_writes_are_each_answered_once(
    backend: StdioBackend, tracks: dict[str, Path]
) -> None:
    good = {"user_track": str(tracks["target"]), "reference_track": str(tracks["reference"])}
    # When two requests come on one line
    backend.write(json.dumps(good) + follow_up(tracks) + "\n")
    # Then each is answered, in order
    assert backend.reply()["status"] == "success"
    assert_follow_up_answered(backend)

    # When a pretty-printed request arrives in two writes, the first ending a line
    text = json.dumps(good, indent=2) + "\n"
    cut = text.index("\n", text.index("user_track")) + 1
    backend.write(text[:cut])
    # Then nothing is answered until the rest has come
    backend.assert_silent()
    backend.write(text[cut:])
    assert backend.reply()["status"] == "success"
    backend.assert_silent()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tracks_with_the_same_name_never_overwrite_each_others_results(
    tmp_path: Path, tracks: dict[str, Path]
) -> None:
    # Given two different tracks both called song.wav, in two folders
    songs = []
    for folder, seed in (("album", 5), ("demos", 6)):
        (tmp_path / folder).mkdir()
        mix = tone_mix(6.0, RATE, seed=seed, peak_dbfs=-18)
        songs.append(write_wav(tmp_path / folder / "song.wav", mix, RATE))
    backend = StdioBackend(tmp_path)
    try:
        # When both are mastered, and the first one again
        first = Path(backend.ask(songs[0], tracks["reference"])["output_path"])
        first_digest = digest(first)
        second = Path(backend.ask(songs[1], tracks["reference"])["output_path"])
        third = Path(backend.ask(songs[0], tracks["reference"])["output_path"])

        # Then each result has a name of its own and the first is still what it was
        assert [p.name for p in (first, second, third)] == [
            "processed_song.wav",
            "processed_song-2.wav",
            "processed_song-3.wav",
        ]
        assert digest(first) == first_digest
        assert digest(second) != first_digest
        assert sorted(p.name for p in backend.output_dir.iterdir()) == sorted(
            p.name for p in (first, second, third)
        )
    finally:
        backend.kill()


def test_every_error_is_logged_to_the_log_file(tmp_path: Path, tracks: dict[str, Path]) -> None:
    # Given a text file with an audio file's name
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all\n" * 50)
    backend = StdioBackend(tmp_path)
    try:
        # When garbage, a request for a missing file, an unknown preset and audio the
        # engine refuses are sent
        backend.write("this is not json\n")
        backend.write(follow_up(tracks) + "\n")
        backend.write(json.dumps({"user_track": str(fake), "preset": "Polka"}) + "\n")
        backend.write(json.dumps({"user_track": str(fake), "preset": "Warm"}) + "\n")
        replies = [backend.reply() for _ in range(4)]
        assert backend.finish() == 0
    finally:
        backend.kill()
    # Then each error is in the log with its reason and the request it answered
    errors = [line for line in backend.log().splitlines() if " - ERROR - " in line]
    assert [r["status"] for r in replies] == ["error"] * 4
    assert len(errors) == 4, backend.log()
    for line, reply in zip(errors, replies, strict=True):
        assert reply["message"] in line
    assert "'this is not json'" in errors[0]
    assert "/nowhere/r.wav" in errors[1]
    assert '"preset": "Polka"' in errors[2]
    assert str(fake) in errors[3]


def test_audio_the_engine_refuses_gets_its_reason(
    backend: StdioBackend, tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given a text file with an audio file's name
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all\n" * 50)
    # When it is sent as the target
    answer = backend.ask(fake, tracks["reference"])
    # Then the answer is the service's reason, not a crash
    assert answer["status"] == "error"
    assert "not an audio file" in answer["message"]
    assert_serving(backend, tracks)


def test_over_time_request_is_stopped_and_the_backend_carries_on(
    tmp_path: Path, tracks: dict[str, Path]
) -> None:
    # Given a one-second limit and a target that takes several seconds to master here
    # (five minutes: about 3 s), made by repeating a short clip because that is quick
    clip = tone_mix(10.0, RATE, seed=3, peak_dbfs=-18)
    long_target = write_wav(tmp_path / "long.wav", np.tile(clip, (30, 1)), RATE)
    backend = StdioBackend(tmp_path, MAX_PROCESSING_TIME="1")
    try:
        # When it is requested
        answer = backend.ask(long_target, tracks["reference"])

        # Then the answer is an error about the time limit
        assert answer["status"] == "error"
        assert "time limit" in answer["message"]
        # And nothing is left: no result, no temporary files
        assert not backend.output_dir.exists() or list(backend.output_dir.iterdir()) == []
        assert list(backend.temp_dir.iterdir()) == []
        # And the next request is still answered
        follow_up = backend.ask("/nowhere/song.wav", tracks["reference"])
        assert follow_up["status"] == "error"
        assert "not found" in follow_up["message"]
        # And EOF ends it with status 0
        assert backend.finish() == 0
        assert "time limit" in backend.log()
    finally:
        backend.kill()


def test_end_of_input_exits_0_and_logs_stay_off_stdout(tmp_path: Path) -> None:
    # Given a backend logging at DEBUG to stderr (no LOG_FILE)
    process = subprocess.run(
        [sys.executable, "-m", "mastering.cli", "stdio"],
        input=b'not json\n{"user_track": "x", "reference_track": "y"}\n',
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "LOG_LEVEL": "DEBUG", "OUTPUT_DIR": str(tmp_path / "out")},
        timeout=120,
        check=False,
    )
    # Then stdout holds exactly the two answers, the logs went to stderr, and it exited 0
    answers = [json.loads(line) for line in process.stdout.decode().splitlines()]
    assert [a["status"] for a in answers] == ["error", "error"]
    assert b"ready" in process.stderr
    assert process.returncode == 0


def test_bad_setting_is_refused_at_start(tmp_path: Path) -> None:
    # When MAX_PROCESSING_TIME is not a number
    process = subprocess.run(
        [sys.executable, "-m", "mastering.cli", "stdio"],
        input="",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MAX_PROCESSING_TIME": "soon"},
        timeout=60,
        check=False,
    )
    # Then it exits with a usage error and says which setting is wrong
    assert process.returncode == 2
    assert "MAX_PROCESSING_TIME" in process.stderr
    assert process.stdout == ""


def run_stdio(cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mastering.cli", "stdio"],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=plugin_env(**env),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("output_dir", "message"),
    [
        ("a-file/results", "OUTPUT_DIR a-file/results cannot be created: Not a directory"),
        ("a-file", "OUTPUT_DIR is not a folder: a-file"),
        pytest.param(
            "read-only",
            "OUTPUT_DIR read-only cannot be written to: Permission denied",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere"),
        ),
    ],
)
def test_an_output_dir_that_cannot_be_written_is_refused_at_start(
    tmp_path: Path, output_dir: str, message: str
) -> None:
    # Given an OUTPUT_DIR that is a file, lies under a file, or is read-only
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "read-only").mkdir(mode=0o555)
    # When the backend starts, with a request waiting
    request = json.dumps({"user_track": "song.wav", "reference_track": "ref.wav"})
    process = run_stdio(tmp_path, request + "\n", OUTPUT_DIR=output_dir)
    # Then it exits 2 with one line on stderr saying why, and answers nothing
    assert process.returncode == 2
    assert process.stderr.splitlines() == [f"mastering stdio: error: {message}"]
    assert process.stdout == ""


def test_the_original_backends_env_example_works_as_written(
    tmp_path: Path, tracks: dict[str, Path]
) -> None:
    # Given MasterMatcherVST's .env.example copied to .env where the plugin starts us
    (tmp_path / ".env").write_text(ORIGINAL_ENV_EXAMPLE)
    backend = StdioBackend(tmp_path, own_settings=False)
    try:
        # When a track is mastered
        answer = backend.ask(tracks["target"], tracks["reference"])
        # Then it is, with the file's settings: results in processed/, the log in
        # mastermatcher.log, temporary files (none left) in temp/
        assert answer["status"] == "success", answer
        assert Path(answer["output_path"]).parent == (tmp_path / "processed").resolve()
        assert backend.finish() == 0
        log = (tmp_path / "mastermatcher.log").read_text()
        assert "time limit 300 s, 3 retries" in log
        assert list((tmp_path / "temp").iterdir()) == []
    finally:
        backend.kill()


def test_settings_in_the_environment_win_over_the_env_file(tmp_path: Path) -> None:
    # Given a .env with a usable time limit, and a bad one in the environment
    (tmp_path / ".env").write_text("MAX_PROCESSING_TIME=300  # seconds\n")
    # When the backend starts
    process = run_stdio(tmp_path, MAX_PROCESSING_TIME="soon")
    # Then the environment's value is the one read (and refused)
    assert process.returncode == 2
    assert "MAX_PROCESSING_TIME must be a number of seconds, not 'soon'" in process.stderr


def test_defaults_and_a_preset_by_name_with_options(
    tmp_path: Path, tracks: dict[str, Path]
) -> None:
    # Given a backend with no settings at all (no environment, no .env)
    backend = StdioBackend(tmp_path, own_settings=False)
    try:
        # When a preset is asked for by its display name in capitals, with options
        backend.write(
            json.dumps(
                {
                    "user_track": str(tracks["target"]),
                    "preset": "WARM",
                    "mastering": {"loudness": "spotify", "intensity": 0.5},
                },
                indent=2,
            )
            + "\n"
        )
        answer = backend.reply()
        # Then it is mastered with that preset into the original's default folder
        assert answer["status"] == "success", answer
        assert "preset Warm" in answer["message"]
        output = Path(answer["output_path"])
        assert output.parent == (tmp_path / "processed").resolve()
        assert sf.info(output).frames == sf.info(tracks["target"]).frames
        assert backend.finish() == 0
    finally:
        backend.kill()
