"""Ports and processes of the local tools: probing ports, stopping children cleanly."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess

from mastering.parent_death import die_with_parent

_forked_children_prepared = False


class PortInUse(Exception):
    def __init__(self, host: str, port: int, what: str) -> None:
        super().__init__(f"port {port} on {host} ({what}) is already in use")
        self.host = host
        self.port = port
        self.what = what


def check_port_free(host: str, port: int, *, what: str) -> None:
    """Raise ``PortInUse`` if a server could not listen on ``host:port``.

    SO_REUSEADDR as the servers themselves set it, so a port left in TIME_WAIT by a
    stack that just stopped counts as free, as it is for them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(host, port, what) from error
            raise


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _in_forked_child() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()


def prepare_forked_children() -> None:
    """Make children forked from this process (the isolated mastering runs) end with it.

    - SIGINT/SIGTERM kill them at once instead of running this process's Python
      handlers: a Ctrl-C reaches the terminal's whole group, and a child that
      inherited "set the stop flag" would keep mastering, one with Python's default
      KeyboardInterrupt would print a traceback. Dying is what the parent's
      ``run_isolated`` already turns into a clean job failure.
    - If this process is killed outright (out of memory, SIGKILL), its child goes
      too, as everything in a Lambda sandbox does, instead of mastering on for nobody.
    """
    global _forked_children_prepared
    if not _forked_children_prepared:
        os.register_at_fork(after_in_child=_in_forked_child)
        _forked_children_prepared = True


def stop_process(process: subprocess.Popen[bytes], *, sig: int, grace_s: float) -> int | None:
    """Send ``sig``, wait up to ``grace_s``, then kill; return the exit status."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None
