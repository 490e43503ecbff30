"""Processes that die with their parent: the kernel's parent-death signal (Linux).

One leaf for every layer that starts processes (ffmpeg from ``audio``, the isolated
mastering child from ``worker``, the local stack's workers from ``devstack``): a
process whose parent is gone (a Lambda sandbox killed at its timeout, ``mastering
master`` killed outright) would otherwise run on for nobody, writing into the /tmp the
next job needs. Elsewhere than Linux the request is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved here, once, at import: a forked child must do as little as possible
# (between fork and exec, only this system call runs).
_prctl = _load_prctl()

# Whether ``die_with_parent`` does anything here.
SUPPORTED = _prctl is not None


def die_with_parent(expected_parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent goes.

    With ``expected_parent``, exit at once if that parent is already gone: it may
    have died before the request was made. (The signal follows the thread that
    started the process: callers wait for their children on that thread.)
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
