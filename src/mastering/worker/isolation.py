"""Run the CPU- and memory-heavy mastering work in a child process with a deadline.

Why a child process: a Lambda timeout or out-of-memory kill gives the handler no
chance to record what happened. With the work in a forked child, the parent
stays small and responsive: it forwards progress, stops the child before the
function's own deadline (``processing_timeout``), asks every second whether the job
was cancelled, notices when the kernel killed the child (``internal_error``), and
always gets to clean up and end the job.

The child leads a process group of its own, and every way out of ``run_isolated``
(success, the child's error, its death, the deadline, a cancel, an exception in this
process) SIGKILLs that whole group: the ffmpeg processes the child started go with it
instead of writing on into the /tmp the next job needs.

Fork (not spawn) so the child inherits the already-imported engine (numpy, scipy,
soundfile) and the parent's state, and starts in milliseconds. Only a pipe crosses between them
(Lambda has no /dev/shm, so no multiprocessing queues).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from mastering.errors import (
    OUT_OF_DISK_MESSAGE,
    InternalError,
    JobCancelled,
    MasteringError,
    ProcessingTimeout,
    error_from_code,
    is_out_of_disk,
)
from mastering.jobs.model import Stage
from mastering.parent_death import die_with_parent

T = TypeVar("T")
ProgressCallback = Callable[[Stage, int], None]
StopCheck = Callable[[], bool]
IsolatedWork = Callable[[ProgressCallback], T]

logger = logging.getLogger(__name__)

_POLL_S = 0.25
# How long a child that has sent its result may take to exit before it is killed.
_EXIT_GRACE_S = 2.0
# How often ``should_stop`` is asked: it reads the jobs table, so not on every poll.
STOP_POLL_S = 1.0
# A child killed after its resident memory reached this share of what the sandbox has
# was killed for memory: the parent, ffmpeg and the kernel hold the rest. Below it, a
# SIGKILL came from elsewhere (an operator, a runtime shutting down) and saying "out of
# memory" would send the user after the wrong fix.
OUT_OF_MEMORY_SHARE = 0.75
_KIB = 1024

CANCELLED_MESSAGE = "The job was cancelled"


def _child_main(work: IsolatedWork[Any], conn: Connection, parent_pid: int) -> None:
    # A group of its own, so the parent can kill the child and everything it started
    # at once (the parent sets it too: whichever runs first wins the race).
    os.setpgid(0, 0)
    # And gone if the parent goes (SIGKILLed with its sandbox, say): nobody would read
    # its result, and nobody would kill its group.
    die_with_parent(parent_pid)

    def report(stage: Stage, percent: int) -> None:
        conn.send(("progress", str(stage), int(percent)))

    try:
        result = work(report)
    except MasteringError as error:
        conn.send(("error", str(error.code), error.message))
    except MemoryError:
        conn.send(("error", "internal_error", "The track needs more memory than is available"))
    except BaseException as error:
        # The trace goes to the function log (stderr); the client sees a plain message,
        # which says so when /tmp filled up.
        traceback.print_exc()
        message = OUT_OF_DISK_MESSAGE if is_out_of_disk(error) else "Mastering failed unexpectedly"
        conn.send(("error", "internal_error", message))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def _stop_requested(should_stop: StopCheck | None) -> bool:
    if should_stop is None:
        return False
    try:
        return bool(should_stop())
    except Exception:
        # A cancel flag that cannot be read (a throttled table) is not a cancel: the job
        # goes on, and the next second asks again.
        logger.warning("could not check whether the job was cancelled", exc_info=True)
        return False


def run_inline(
    work: IsolatedWork[T],
    *,
    budget_s: float,
    on_progress: ProgressCallback,
    should_stop: StopCheck | None = None,
) -> T:
    """Run ``work`` in this process, with no deadline: for tests that count or watch
    what the work does from the outside. ``should_stop`` is asked at progress reports,
    at most once every ``STOP_POLL_S``; when it says so, the report raises JobCancelled
    inside the work, which unwinds it."""
    if should_stop is None:
        return work(on_progress)
    if _stop_requested(should_stop):
        raise JobCancelled(CANCELLED_MESSAGE)
    next_check = time.monotonic() + STOP_POLL_S

    def report(stage: Stage, percent: int) -> None:
        nonlocal next_check
        now = time.monotonic()
        if now >= next_check:
            next_check = now + STOP_POLL_S
            if _stop_requested(should_stop):
                raise JobCancelled(CANCELLED_MESSAGE)
        on_progress(stage, percent)

    return work(report)


def run_isolated(
    work: IsolatedWork[T],
    *,
    budget_s: float,
    on_progress: ProgressCallback,
    should_stop: StopCheck | None = None,
    memory_limit_bytes: int | None = None,
) -> T:
    """Run ``work`` in a child, forwarding progress; raise its typed error if it failed.

    ``should_stop`` is asked about once a second (never more often); when it returns
    True the child's whole process group is killed and JobCancelled raised. A child that
    dies is reported as out of memory only if its peak resident memory came near
    ``memory_limit_bytes`` (default: the sandbox's, see ``available_memory_bytes``).
    """
    if budget_s <= 0:
        raise ProcessingTimeout("There was not enough time left to master this track")
    if _stop_requested(should_stop):
        raise JobCancelled(CANCELLED_MESSAGE)

    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(work, child_conn, os.getpid()), daemon=True)
    memory = _MemoryWatch(memory_limit_bytes or available_memory_bytes())
    deadline = time.monotonic() + budget_s
    next_stop_check = time.monotonic() + STOP_POLL_S
    child.start()
    pid = child.pid
    assert pid is not None
    _own_group(pid)
    child_conn.close()
    reported = False
    try:
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise ProcessingTimeout(
                    "Mastering took longer than this service allows; try a shorter track"
                )
            if should_stop is not None and now >= next_stop_check:
                next_stop_check = now + STOP_POLL_S
                if _stop_requested(should_stop):
                    raise JobCancelled(CANCELLED_MESSAGE)
            memory.sample(pid)
            if not parent_conn.poll(min(_POLL_S, remaining)):
                if _exited(pid) and not parent_conn.poll():
                    break
                continue
            try:
                message = parent_conn.recv()
            except EOFError:
                break
            kind = message[0]
            if kind == "progress":
                on_progress(Stage(message[1]), int(message[2]))
            elif kind == "ok":
                reported = True
                result: T = message[1]
                return result
            else:
                reported = True
                raise error_from_code(message[1], message[2])
    finally:
        if reported:
            # A child that said how it ended gets a moment to exit by itself (its
            # output flushed); whatever it started and left is killed all the same.
            _await_exit(pid, _EXIT_GRACE_S)
        # Before the child is reaped, so its id cannot yet belong to anyone else.
        _kill_group(pid)
        child.join(timeout=5)
        parent_conn.close()
    # Only a child that died without a word gets here.
    raise _death_error(child.exitcode, memory)


def _own_group(pid: int) -> None:
    # Fails if the child already did it (EACCES once it runs) or has already exited.
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)


def _kill_group(pgid: int) -> None:
    # Fails when nobody is left in the group: everything already ended.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _await_exit(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it (it stays a zombie, so its id,
    which is also its group's, is not handed out again before the group is killed)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _death_error(exitcode: int | None, memory: _MemoryWatch) -> MasteringError:
    killed = exitcode is not None and exitcode < 0
    if killed and memory.ran_out():
        return InternalError(
            "Mastering ran out of memory; try a shorter track or a lower sample rate"
        )
    logger.error(
        "the mastering child died (exit %s) with a peak of %d MiB of %d MiB available",
        exitcode,
        memory.peak_bytes() // 2**20,
        memory.limit_bytes // 2**20,
    )
    return InternalError("Mastering stopped unexpectedly")


class _MemoryWatch:
    """The child's peak resident memory against what the sandbox has.

    The peak is the kernel's own high-water mark (``VmHWM``), read while the child
    runs, and after it died the largest reaped child's peak (``RUSAGE_CHILDREN``) when
    that rose during this run: a SIGKILL leaves no chance to ask the child itself. A
    cgroup's ``oom_kill`` count that rose settles it where the cgroup is readable.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._hwm_bytes = 0
        self._children_before = _children_peak_bytes()
        self._oom_kills_before = _cgroup_oom_kills()

    def sample(self, pid: int) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self._hwm_bytes = max(self._hwm_bytes, int(line.split()[1]) * _KIB)
                return

    def peak_bytes(self) -> int:
        after = _children_peak_bytes()
        reaped = after if after > self._children_before else 0
        return max(self._hwm_bytes, reaped)

    def ran_out(self) -> bool:
        oom_kills, before = _cgroup_oom_kills(), self._oom_kills_before
        if oom_kills is not None and before is not None and oom_kills > before:
            return True
        return self.peak_bytes() >= OUT_OF_MEMORY_SHARE * self.limit_bytes


def _children_peak_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * _KIB


def _own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, if it has one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/")
    return None


def _cgroup_oom_kills() -> int | None:
    cgroup = _own_cgroup()
    if cgroup is None:
        return None
    try:
        events = (cgroup / "memory.events").read_text()
    except OSError:
        return None
    for line in events.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.isdigit():
            return int(value)
    return None


def available_memory_bytes() -> int:
    """The memory this sandbox may use: its cgroup's limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``) where one is set, else the machine's. (A Lambda sandbox
    is sized to the function's memory setting; the master function may pass
    ``memory_limit_bytes`` from its context instead.)"""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    cgroup = _own_cgroup()
    candidates = [cgroup / "memory.max"] if cgroup is not None else []
    candidates.append(Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits)
