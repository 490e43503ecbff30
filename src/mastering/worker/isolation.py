"""Run the CPU- and memory-heavy mastering work in a child process with a deadline.

Why a child process: a Lambda timeout or out-of-memory kill gives the handler no
chance to record what happened. With the work in a forked child, the parent
stays small and responsive: it forwards progress, stops the child before the
function's own deadline (``processing_timeout``), notices when the kernel killed
it (``internal_error``), and always gets to clean up and end the job.

Fork (not spawn) so the child inherits the already-imported engine (numpy, scipy,
soundfile) and the parent's state, and starts in milliseconds. Only a pipe crosses between them
(Lambda has no /dev/shm, so no multiprocessing queues).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from mastering.errors import InternalError, MasteringError, ProcessingTimeout, error_from_code
from mastering.jobs.model import Stage

T = TypeVar("T")
ProgressCallback = Callable[[Stage, int], None]
IsolatedWork = Callable[[ProgressCallback], T]

_POLL_S = 0.25


def _child_main(work: IsolatedWork[Any], conn: Connection) -> None:
    def report(stage: Stage, percent: int) -> None:
        conn.send(("progress", str(stage), int(percent)))

    try:
        result = work(report)
    except MasteringError as error:
        conn.send(("error", str(error.code), error.message))
    except MemoryError:
        conn.send(("error", "internal_error", "The track needs more memory than is available"))
    except BaseException:
        # The trace goes to the function log (stderr); the client sees a plain message.
        traceback.print_exc()
        conn.send(("error", "internal_error", "Mastering failed unexpectedly"))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def run_inline(work: IsolatedWork[T], *, budget_s: float, on_progress: ProgressCallback) -> T:
    """Run ``work`` in this process, with no deadline: for tests that count or watch
    what the work does from the outside."""
    return work(on_progress)


def run_isolated(work: IsolatedWork[T], *, budget_s: float, on_progress: ProgressCallback) -> T:
    """Run ``work`` in a child, forwarding progress; raise its typed error if it failed."""
    if budget_s <= 0:
        raise ProcessingTimeout("There was not enough time left to master this track")

    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(work, child_conn), daemon=True)
    deadline = time.monotonic() + budget_s
    child.start()
    child_conn.close()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessingTimeout(
                    "Mastering took longer than this service allows; try a shorter track"
                )
            if not parent_conn.poll(min(_POLL_S, remaining)):
                if not child.is_alive() and not parent_conn.poll():
                    raise _death_error(child.exitcode)
                continue
            try:
                message = parent_conn.recv()
            except EOFError:
                child.join(timeout=5)
                raise _death_error(child.exitcode) from None
            kind = message[0]
            if kind == "progress":
                on_progress(Stage(message[1]), int(message[2]))
            elif kind == "ok":
                result: T = message[1]
                return result
            else:
                raise error_from_code(message[1], message[2])
    finally:
        if child.is_alive():
            child.kill()
        child.join(timeout=5)
        parent_conn.close()


def _death_error(exitcode: int | None) -> MasteringError:
    if exitcode == -signal.SIGKILL:
        # The kernel's OOM killer is what sends SIGKILL to a Lambda child.
        return InternalError(
            "Mastering ran out of memory; try a shorter track or a lower sample rate"
        )
    return InternalError("Mastering stopped unexpectedly")
