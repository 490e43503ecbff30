"""The isolated mastering child: whatever way a job ends, nothing it started runs on,
a cancel stops it within seconds, and the error says what really happened."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from mastering.audio import ffmpeg as ffmpeg_mod
from mastering.errors import (
    ErrorCode,
    InternalError,
    InvalidAudio,
    JobCancelled,
    ProcessingTimeout,
)
from mastering.jobs.model import Stage
from mastering.worker.isolation import run_inline, run_isolated

# ffmpeg reading a minute of generated silence in real time: a decode that runs long.
SLOW_FFMPEG = ["-nostdin", "-re", "-f", "lavfi", "-i", "anullsrc=d=60", "-f", "null", "-"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has finished: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone_soon(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(proc.name))
    return members


class Spawned:
    """Where a work function records the processes it started, for the test to check."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "spawned.txt"

    def record(self, *pids: int) -> None:
        with self.file.open("a") as out:
            out.write(" ".join(str(pid) for pid in pids) + "\n")

    def pids(self) -> list[int]:
        if not self.file.exists():
            return []
        return [int(word) for word in self.file.read_text().split()]


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[Spawned]:
    record = Spawned(tmp_path)
    yield record
    # Whatever a failing test left running is not left for the next one.
    for pid in record.pids():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _start_slow_ffmpeg(spawned: Spawned, tmp_path: Path) -> subprocess.Popen[bytes]:
    """ffmpeg started the way the decoder and the encoders start it, recorded with the
    process group the work runs in."""
    process = ffmpeg_mod.start_ffmpeg(
        SLOW_FFMPEG, ffmpeg_path=None, stderr_path=tmp_path / f"ffmpeg-{os.getpid()}.log"
    )
    spawned.record(os.getpgrp(), process.pid)
    return process


def _no_progress(stage: Stage, percent: int) -> None:
    pass


# --- nothing the child started outlives the job ------------------------------------------


def test_a_timed_out_job_leaves_no_ffmpeg_running(spawned: Spawned, tmp_path: Path) -> None:
    # Given work whose decode (an ffmpeg run) takes a minute, and a 1.5-second budget
    def work(progress: Callable[[Stage, int], None]) -> None:
        progress(Stage.DECODING, 10)
        process = _start_slow_ffmpeg(spawned, tmp_path)
        process.wait()

    # When it runs isolated
    with pytest.raises(ProcessingTimeout):
        run_isolated(work, budget_s=1.5, on_progress=_no_progress)

    # Then the work ran in a process group of its own, and no process of it is left
    group, ffmpeg = spawned.pids()
    assert group != os.getpgrp()
    assert _gone_soon(ffmpeg)
    assert _group_members(group) == []


def test_a_job_that_fails_leaves_no_ffmpeg_running(spawned: Spawned, tmp_path: Path) -> None:
    # Given work that starts ffmpeg and then fails on the user's file without stopping it
    def work(progress: Callable[[Stage, int], None]) -> None:
        _start_slow_ffmpeg(spawned, tmp_path)
        raise InvalidAudio("The target could not be decoded")

    # When it runs isolated, Then its error comes back, and its ffmpeg is gone with it
    with pytest.raises(InvalidAudio, match="could not be decoded"):
        run_isolated(work, budget_s=30.0, on_progress=_no_progress)
    group, ffmpeg = spawned.pids()
    assert _gone_soon(ffmpeg)
    assert _group_members(group) == []


def test_a_parent_that_fails_leaves_no_ffmpeg_running(spawned: Spawned, tmp_path: Path) -> None:
    # Given work that reports progress while its ffmpeg runs, and a parent whose progress
    # write fails (the jobs table unreachable, say)
    def work(progress: Callable[[Stage, int], None]) -> None:
        process = _start_slow_ffmpeg(spawned, tmp_path)
        progress(Stage.DECODING, 10)
        process.wait()

    def failing_progress(stage: Stage, percent: int) -> None:
        raise RuntimeError("the progress write failed")

    # When it runs isolated, Then the parent's error propagates and the child's ffmpeg is gone
    with pytest.raises(RuntimeError, match="progress write failed"):
        run_isolated(work, budget_s=30.0, on_progress=failing_progress)
    group, ffmpeg = spawned.pids()
    assert _gone_soon(ffmpeg)
    assert _group_members(group) == []


def test_ffmpeg_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # Given a process that starts ffmpeg the way the service does, then is killed outright
    # (as a sandbox's runtime is at a Lambda timeout), so no one is left to stop ffmpeg
    pid_file = tmp_path / "ffmpeg.pid"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from mastering.audio.ffmpeg import start_ffmpeg
        process = start_ffmpeg({SLOW_FFMPEG!r}, ffmpeg_path=None,
                               stderr_path=Path({str(tmp_path / "log")!r}))
        Path({str(pid_file)!r}).write_text(str(process.pid))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    starter = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert starter.returncode == -signal.SIGKILL
    ffmpeg = int(pid_file.read_text())
    try:
        # Then ffmpeg does not run on for nobody
        assert _gone_soon(ffmpeg)
    finally:
        if _alive(ffmpeg):
            os.kill(ffmpeg, signal.SIGKILL)


# --- cancellation ---------------------------------------------------------------------


def test_should_stop_cancels_within_seconds_and_is_asked_about_once_a_second(
    spawned: Spawned, tmp_path: Path
) -> None:
    # Given a long job, and a cancel flag (read from the jobs table in production) that
    # turns on after 2 seconds
    started = time.monotonic()
    asked: list[float] = []

    def should_stop() -> bool:
        asked.append(time.monotonic() - started)
        return asked[-1] > 2.0

    def work(progress: Callable[[Stage, int], None]) -> None:
        _start_slow_ffmpeg(spawned, tmp_path).wait()

    # When it runs isolated with that flag
    with pytest.raises(JobCancelled) as caught:
        run_isolated(work, budget_s=60.0, on_progress=_no_progress, should_stop=should_stop)

    # Then it was cancelled within a second or so of the flag, as a cancellation
    elapsed = time.monotonic() - started
    assert caught.value.code is ErrorCode.CANCELLED
    assert 2.0 < elapsed < 4.5
    # And the flag was not read more than about once a second
    gaps = np.diff(asked)
    assert len(asked) <= 5
    assert gaps.min() >= 0.9
    # And nothing the job started is left
    group, ffmpeg = spawned.pids()
    assert _gone_soon(ffmpeg)
    assert _group_members(group) == []


def test_a_flag_that_cannot_be_read_does_not_stop_the_job() -> None:
    # Given a cancel flag whose read fails (a throttled table, say) and a 2-second job
    def should_stop() -> bool:
        raise ConnectionError("throttled")

    def work(progress: Callable[[Stage, int], None]) -> str:
        time.sleep(2.2)
        return "mastered"

    # When it runs isolated, Then the job still finishes
    assert (
        run_isolated(work, budget_s=30.0, on_progress=_no_progress, should_stop=should_stop)
        == "mastered"
    )


def test_run_inline_asks_should_stop_between_progress_reports() -> None:
    # Given in-process work that reports progress, and a flag that turns on after the first
    # question
    answers = iter([False, True])
    reached: list[int] = []

    def work(progress: Callable[[Stage, int], None]) -> None:
        for percent in (10, 20, 30):
            progress(Stage.MATCHING, percent)
            reached.append(percent)
            time.sleep(1.05)

    # When it runs inline, Then it stops at the report after the flag turned on
    with pytest.raises(JobCancelled):
        run_inline(
            work,
            budget_s=30.0,
            on_progress=_no_progress,
            should_stop=lambda: next(answers),
        )
    assert reached == [10]


# --- errors that say what happened ----------------------------------------------------


def test_a_child_killed_without_using_much_memory_is_not_called_out_of_memory() -> None:
    # Given work killed outright although it used little memory (an operator, a runtime)
    def work(progress: Callable[[Stage, int], None]) -> None:
        progress(Stage.MATCHING, 50)
        os.kill(os.getpid(), signal.SIGKILL)

    # When it runs isolated
    with pytest.raises(InternalError) as caught:
        run_isolated(work, budget_s=30.0, on_progress=_no_progress)

    # Then the job's error says it stopped, not that memory ran out
    assert "memory" not in caught.value.message
    assert caught.value.message == "Mastering stopped unexpectedly"


def test_a_child_killed_near_the_memory_limit_ran_out_of_memory() -> None:
    # Given a 400 MB memory limit and work that filled 350 MB of it when it was killed,
    # as the kernel's OOM killer does
    def work(progress: Callable[[Stage, int], None]) -> None:
        hog = np.ones(350 * 2**20, dtype=np.uint8)
        time.sleep(0.6)  # long enough to be seen
        assert hog[-1] == 1
        os.kill(os.getpid(), signal.SIGKILL)

    # When it runs isolated
    with pytest.raises(InternalError) as caught:
        run_isolated(work, budget_s=30.0, on_progress=_no_progress, memory_limit_bytes=400 * 2**20)

    # Then the job's error says memory ran out, and what to do
    assert "ran out of memory" in caught.value.message


def test_a_full_disk_is_an_internal_error_that_says_so() -> None:
    # Given work that hits a full /tmp
    def work(progress: Callable[[Stage, int], None]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/mastering-job-x/out.wav")

    # When it runs isolated, Then it is our internal error, saying what ran out, no path
    with pytest.raises(InternalError) as caught:
        run_isolated(work, budget_s=30.0, on_progress=_no_progress)
    assert caught.value.code is ErrorCode.INTERNAL_ERROR
    assert "disk space" in caught.value.message
    assert "/tmp" not in caught.value.message
