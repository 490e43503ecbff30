"""`mastering stdio`, the MasterMatcherVST plugin's backend, as the plugin runs it:
a child process spoken to in JSON lines over its stdin and stdout."""

from __future__ import annotations

import json
import os
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


class StdioBackend:
    """The backend process and the plugin's side of the protocol."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.output_dir = workdir / "output"
        self.temp_dir = workdir / "tmp"
        self.log_file = workdir / "backend.log"
        self._pending = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mastering.cli", "stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env={
                **os.environ,
                "OUTPUT_DIR": str(self.output_dir),
                "TEMP_DIR": str(self.temp_dir),
                "LOG_FILE": str(self.log_file),
                **env,
            },
            start_new_session=True,
        )

    def send(self, line: str) -> dict[str, Any]:
        """Write one line and read the one line that answers it."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        return json.loads(self._read_line())

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
    assert output.name == "processed_my take.wav"
    info = sf.info(output)
    assert info.subtype == "PCM_24"
    assert info.frames == sf.info(tracks["target"]).frames
    assert "LUFS" in answer["message"]
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


@pytest.mark.parametrize(
    "line",
    [
        "this is not json",
        '{"user_track": "a.wav"',
        "[1, 2]",
        '{"user_track": "a.wav"}',
        '{"user_track": 3, "reference_track": "b.wav"}',
    ],
)
def test_malformed_request_gets_an_error_line(
    backend: StdioBackend, tracks: dict[str, Path], line: str
) -> None:
    # When the plugin sends a line that is not a valid request
    answer = backend.send(line)
    # Then the answer is an error saying so
    assert answer["status"] == "error"
    assert answer["message"].startswith("Invalid request")
    # And the next request is still served
    assert_serving(backend, tracks)


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
