"""Run a function's handler the way Lambda does, without Docker.

The Lambda Runtime Interface Emulator (the ``aws-lambda-rie`` binary that the
``aws-sam-cli`` wheel ships for ``sam local``) plays the Lambda service: it serves
the Runtime API, starts ``awslambdaric`` (the Python runtime client Lambda's
images use) on the first invoke, enforces the function timeout and hands the
handler a context with the configured memory and deadline. The handler code sits
in a read-only task root (Lambda's ``/var/task``) and may only write to the work
directory (Lambda's ``/tmp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "functions"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# What a Lambda sandbox has that the RIE does not set itself.
_LAMBDA_BASE_ENV = {
    "LANG": "C.UTF-8",
    "TZ": ":UTC",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Fake credentials, and never the developer's own profile or an instance role.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "spectrum-mastering",
    "POWERTOOLS_METRICS_NAMESPACE": "SpectrumMasteringRuntimeTest",
    "LOG_LEVEL": "INFO",
    "STAGE": "test",
}
_STARTUP_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0


def rie_binary_name() -> str:
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("aarch64", "arm64") else "x86_64"
    return f"aws-lambda-rie-{arch}"


def copy_rie(dest_dir: Path) -> Path:
    """Copy the emulator for this machine out of the installed samcli package."""
    import samcli

    source = Path(os.path.dirname(samcli.__file__)) / "local" / "rapid" / rie_binary_name()
    if not source.is_file():
        raise FileNotFoundError(f"aws-sam-cli ships no {source.name} at {source}")
    dest = dest_dir / "aws-lambda-rie"
    shutil.copyfile(source, dest)
    dest.chmod(0o755)
    return dest


def build_task_root(function: str, dest: Path) -> Path:
    """Lay out ``functions/<function>/*.py`` as Lambda's read-only /var/task.

    The ``mastering`` package comes from the virtualenv, as it comes from the zip
    or the image in AWS.
    """
    sources = sorted((FUNCTIONS / function).glob("*.py"))
    if not sources:
        raise FileNotFoundError(f"functions/{function} has no handler modules")
    dest.mkdir(parents=True)
    for source in sources:
        shutil.copy2(source, dest / source.name)
    set_writable(dest, writable=False)
    return dest


def set_writable(root: Path, *, writable: bool) -> None:
    """``chmod -R a-w`` (or ``u+w`` to undo it, e.g. before removing the tree)."""
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    paths = [root, *root.rglob("*")]
    # Directories last when locking, first when unlocking, so the walk never locks
    # itself out (which only matters when not running as root).
    for path in paths if writable else reversed(paths):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        path.chmod((mode | stat.S_IWUSR) if writable else (mode & ~write_bits))


def snapshot(root: Path) -> set[str]:
    """Every path under ``root``, relative, except Python's own bytecode cache.

    As root, ``chmod a-w`` is not enforced by the kernel, so tests compare
    snapshots instead to prove a function wrote nothing next to its code.
    """
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if "__pycache__" not in path.relative_to(root).parts
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live processes below ``pid`` (from /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in _children_of(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Runtime:
    """One function under the RIE: a Lambda sandbox with a single warm container."""

    function: str
    handler: str
    rie: Path
    task_root: Path
    work_dir: Path
    log_path: Path
    timeout_s: int
    memory_mb: int
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    runtime_api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{INVOKE_PATH}"

    @property
    def command(self) -> list[str]:
        return [
            str(self.rie),
            # Both addresses pinned to loopback and free ports: the defaults are
            # 0.0.0.0:8080 and 127.0.0.1:9001, which would collide between runtimes.
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{self.runtime_api_port}",
            "--log-level",
            "error",
            sys.executable,
            "-m",
            "awslambdaric",
            self.handler,
        ]

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.task_root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Out of pytest's process group: a Ctrl-C in the terminal reaches
                # pytest, whose teardown then stops the emulator in order.
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"aws-lambda-rie exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"aws-lambda-rie did not listen on {self.port}:\n{self.log_tail()}")

    def invoke(self, event: dict[str, Any]) -> tuple[dict[str, Any], requests.Response]:
        """Invoke the function synchronously; return the decoded payload and the response.

        The request timeout is well past the function's own, so a hang fails the test
        instead of stalling it, while the emulator's timeout handling stays observable.
        """
        response = requests.post(self.url, data=json.dumps(event), timeout=self.timeout_s + 60)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        try:
            payload = response.json()
        except ValueError:
            # The emulator's own timeout answers 200 with plain text:
            # "Task timed out after 6.00 seconds".
            raise AssertionError(
                f"the function returned no JSON: {response.text!r}\n{self.log_tail()}"
            ) from None
        assert isinstance(payload, dict), f"unexpected payload {payload!r}\n{self.log_tail()}"
        return payload, response

    def runtime_pids(self) -> list[int]:
        """The runtime client's process and everything it forked (not the emulator)."""
        if self.process is None:
            return []
        return descendants(self.process.pid)

    def runtime_processes(self) -> dict[int, str]:
        return {pid: _command_line(pid) for pid in self.runtime_pids()}

    def job_work_dirs(self) -> list[str]:
        return sorted(path.name for path in self.work_dir.glob("mastering-job-*"))

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        # The emulator starts the runtime in a process group of its own, so note the
        # runtime and anything it forked before the emulator goes away.
        below = {pid: _command_line(pid) for pid in descendants(process.pid)}
        if process.poll() is None:
            # SIGTERM lets the emulator shut the runtime down as Lambda would.
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)
        for pid, command in below.items():
            # Only the very processes noted above (a reused pid has another command).
            if _command_line(pid) == command:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def lambda_environment(
    *,
    function_name: str,
    task_root: Path,
    work_dir: Path,
    timeout_s: int,
    memory_mb: int,
    service_env: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """A clean environment like a Lambda sandbox's, not this test process's."""
    env = {
        **_LAMBDA_BASE_ENV,
        "PATH": os.environ.get("PATH", os.defpath),
        "LAMBDA_TASK_ROOT": str(task_root),
        # The handlers, then the `mastering` this test process imports (a checkout's
        # src/ when PYTHONPATH names it, else the virtualenv's installed package).
        "PYTHONPATH": os.pathsep.join(
            [str(task_root), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        # Only /tmp is writable in Lambda: everything that wants a scratch dir goes there.
        "WORK_DIR": str(work_dir),
        "TMPDIR": str(work_dir),
        # No ~/.aws of whoever runs the tests.
        "AWS_CONFIG_FILE": str(work_dir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work_dir / "no-aws-credentials"),
        "MASTER_TIMEOUT_S": str(timeout_s),
        **service_env,
    }
    env.update(extra_env or {})
    return env
