#!/usr/bin/env python3
"""Build the master function image's contents without Docker and run a job on them.

``functions/master/Dockerfile`` cannot be built here (no Docker engine), yet the image
is what runs in AWS. This check builds the same Python tree the Dockerfile builds and
runs the master handler from it the way Lambda does:

1. The build context: the files ``sam build`` would send to Docker, chosen by the root
   ``.dockerignore`` with docker-py's own matcher (what SAM's build client uses). Every
   ``COPY`` source of the Dockerfile must be in it; every later step reads from it.
2. The Dockerfile's steps, into ``<workdir>/task`` (the image's ``/var/task``):
   ffmpeg by ``layers/ffmpeg/fetch_ffmpeg.py`` into ``<workdir>/opt/bin`` (``/opt/bin``);
   ``[project].dependencies`` + the ``engine`` extra from pyproject.toml as CPython 3.12
   manylinux wheels (``pip install --target``); the project itself ``--no-deps``; the
   bytecode pip compiles in the image, compiled with Python 3.12; then ``app.py``.
3. The Lambda Runtime Interface Emulator (shipped in the aws-sam-cli wheel) runs
   ``awslambdaric`` with a bare Python 3.12 (a venv without packages, like the image's
   ``/var/lang``) and ``PYTHONPATH`` = the tree, then ``<workdir>/runtime``: awslambdaric
   lives apart from the tree, as in the base image, so the tree's size is the image's.
4. A real job: a moto server on 127.0.0.1 holds the buckets and table
   (``create_resources``); the presign handler, called in this process with
   ``events/api-post-jobs-preset.json``, creates a preset job; the synthetic target goes
   up by its presigned POST; the master handler gets ``events/s3-put-target.json`` for
   it; ``GET /jobs/{id}`` (``events/api-get-job.json``) must show it succeeded, and its
   result must download from the results bucket.

Figures printed: the tree's size without ffmpeg, the handler's cold import time inside
the emulated runtime (awslambdaric's import of ``app``, timed by a probe outside the
tree), which FFTs the engine loads in the image's Python (scipy's compiled module alone,
not the whole ``scipy.fft``: the image's scipy can be newer than the dev venv's), the
job's time. Exit status 1 when a step, the job or a goal fails, 2 when the
check itself cannot run (no Python 3.12, no emulator).

Network: PyPI (or the configured pip index) for the wheels, otherwise 127.0.0.1 only.
Needs the dev virtualenv (moto, aws-sam-cli, docker-py) and a Python 3.12 interpreter
(``--python``, ``$IMAGE_CHECK_PYTHON``, pyenv's 3.12, or ``python3.12`` on PATH).

Here, not in tests/: it downloads wheels, which tests must not, and it checks the
deployable artefact rather than the code's behaviour (that is tests/runtime's job).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = "functions/master/Dockerfile"
EVENTS = REPO / "events"

# Lambda's python3.12 runtime: Amazon Linux 2023, glibc 2.34. Both tags, because some
# projects publish only manylinux2014 wheels and others (soundfile, imageio-ffmpeg) only
# manylinux_2_28 ones; with the first alone pip would take soundfile's pure-Python wheel,
# which lacks the libsndfile the Lambda image does not have.
PYTHON_VERSION = "3.12"
MANYLINUX_TAGS = ("manylinux2014", "manylinux_2_28")

TREE_GOAL_MB = 300.0
IMPORT_GOAL_S = 0.5
# The template's defaults for the master function (MasterMemorySize, MasterTimeout).
MEMORY_MB = 3008
TIMEOUT_S = 360

API_KEY = "local-dev-key"  # the key the files in events/ carry
RATE = 44_100
_STARTUP_TIMEOUT_S = 30.0
WORKDIR_MARKER = ".image-check"
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( +)(\S+)$")

# Loaded by site.py from the probe folder (last on the runtime's PYTHONPATH, outside the
# tree): times awslambdaric's importlib.import_module of the handler module, the cold
# import Lambda does at init. A file of its own because -X importtime does not see
# importlib.import_module itself, only the import statements below it.
SITECUSTOMIZE = """\
import importlib
import os
import time

_import_module = importlib.import_module
_timed = os.environ["IMAGE_CHECK_TIMED_MODULE"]
_report = os.environ["IMAGE_CHECK_IMPORT_REPORT"]


def _timing_import_module(name, package=None):
    if name != _timed or os.path.exists(_report):
        return _import_module(name, package)
    started = time.perf_counter()
    module = _import_module(name, package)
    with open(_report, "w") as report:
        report.write(repr(time.perf_counter() - started))
    return module


importlib.import_module = _timing_import_module
"""


class CheckError(RuntimeError):
    """The check could not run (not a finding about the image): exit status 2."""


class ImageFailure(RuntimeError):
    """The image would not build or not work: exit status 1, like a failed goal."""


def log(message: str) -> None:
    print(f"image-check: {message}", file=sys.stderr, flush=True)


def run(command: Sequence[str | Path], **kwargs: Any) -> None:
    """Run a build step, its output on our stderr; a failure stops the check."""
    printable = " ".join(str(part) for part in command)
    log(f"$ {printable}")
    kwargs.setdefault("stdout", sys.stderr)
    result = subprocess.run([str(part) for part in command], check=False, **kwargs)
    if result.returncode != 0:
        raise ImageFailure(f"exit code {result.returncode}: {printable}")


def megabytes(root: Path) -> float:
    return (
        sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    )


def largest_entries(root: Path, count: int = 6) -> list[tuple[float, str]]:
    """The biggest top-level folders and files of ``root``, in MB."""
    sizes = [
        (megabytes(entry) if entry.is_dir() else entry.stat().st_size / 1e6, entry.name)
        for entry in root.iterdir()
    ]
    return sorted(sizes, reverse=True)[:count]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ interpreter


def find_python312(explicit: str | None) -> Path:
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("IMAGE_CHECK_PYTHON"):
        candidates.append(os.environ["IMAGE_CHECK_PYTHON"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        versions = Path(root.stdout.strip()) / "versions"
        if root.returncode == 0 and versions.is_dir():
            found = sorted(versions.glob(f"{PYTHON_VERSION}.*/bin/python3"), reverse=True)
            candidates.extend(str(path) for path in found)
    if shutil.which(f"python{PYTHON_VERSION}"):
        candidates.append(f"python{PYTHON_VERSION}")
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == PYTHON_VERSION:
            resolved = shutil.which(candidate) or candidate
            return Path(resolved)
    raise CheckError(
        f"no Python {PYTHON_VERSION} found (the Lambda runtime's): pass --python, set "
        f"IMAGE_CHECK_PYTHON, or install one (e.g. `pyenv install {PYTHON_VERSION}`)"
    )


# ------------------------------------------------------------------ build context


def dockerfile_copy_sources(dockerfile: Path) -> list[str]:
    """The context paths the Dockerfile's COPY instructions read (flags dropped)."""
    sources: list[str] = []
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())  # continuation lines
    for line in joined.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        if any(word.startswith("--from") for word in words[1:]):
            continue  # from another stage, not from the context
        arguments = [word for word in words[1:] if not word.startswith("--")]
        sources.extend(argument.rstrip("/") for argument in arguments[:-1])
    return sources


def stage_context(dest: Path) -> tuple[int, float]:
    """Copy what ``sam build`` sends to Docker into ``dest``; return files and MB.

    SAM builds the image with docker-py, whose build call reads ``.dockerignore`` and
    packs ``docker.utils.build.exclude_paths``; the same function chooses here.
    """
    from docker.utils.build import exclude_paths

    ignore = REPO / ".dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    kept = sorted(exclude_paths(str(REPO), patterns, dockerfile=DOCKERFILE))
    files = 0
    for relative in kept:
        source = REPO / relative
        if source.is_file() and not source.is_symlink():
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            files += 1
    missing = [
        path for path in dockerfile_copy_sources(REPO / DOCKERFILE) if not (dest / path).exists()
    ]
    if missing:
        raise ImageFailure(f".dockerignore keeps out what the Dockerfile copies: {missing}")
    return files, megabytes(dest)


# ------------------------------------------------------------------ the image's steps


def image_requirements(pyproject: Path) -> list[str]:
    """What the Dockerfile's step 2 installs: dependencies + the ``engine`` extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["engine"]]
    return [str(requirement) for requirement in requirements]


def wheel_arch() -> str:
    machine = platform.machine().lower()
    return "aarch64" if machine in ("aarch64", "arm64") else "x86_64"


def pip_install_wheels(target: Path, requirements: Sequence[str]) -> None:
    """``pip install --target`` with Lambda's wheels, whatever this machine runs.

    pip runs in this (dev) interpreter with --no-compile: it would compile for its own
    Python version; ``compile_tree`` does it for 3.12 afterwards. --no-warn-conflicts:
    pip would compare the tree with the dev venv's packages, which the image never has.
    """
    platforms = [
        argument for tag in MANYLINUX_TAGS for argument in ("--platform", f"{tag}_{wheel_arch()}")
    ]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-warn-conflicts",
            "--target",
            target,
            "--python-version",
            PYTHON_VERSION,
            "--implementation",
            "cp",
            *platforms,
            "--only-binary=:all:",
            *requirements,
        ]
    )


def compile_tree(python312: Path, root: Path) -> None:
    """The bytecode pip compiles in the image (same compileall, same interpreter version).

    Like pip, this does not stop on a file that does not compile (some packages ship
    such files); the snapshot check after the job catches any module imported
    without its bytecode.
    """
    log(f"$ {python312} -m compileall -q -j 0 {root}")
    result = subprocess.run(
        [str(python312), "-m", "compileall", "-q", "-j", "0", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        log(f"compileall left some files uncompiled:\n{result.stdout[-2000:]}")


def build_image_tree(workdir: Path, context: Path, python312: Path) -> tuple[Path, Path, Path]:
    """The Dockerfile's steps 1-3; returns (task root, ffmpeg, runtime dir)."""
    task = workdir / "task"
    task.mkdir()
    # 1. ffmpeg (Dockerfile: python3 fetch_ffmpeg.py --arch auto --dest /opt/bin). The
    #    script is stdlib-only and checks pinned digests, so which Python runs it does not
    #    matter; this one surely has pip, which it calls.
    opt_bin = workdir / "opt" / "bin"
    fetch = context / "layers/ffmpeg/fetch_ffmpeg.py"
    run([sys.executable, fetch, "--arch", "auto", "--dest", opt_bin])
    ffmpeg = opt_bin / "ffmpeg"
    run([ffmpeg, "-hide_banner", "-version"], stdout=subprocess.DEVNULL)
    # 2. Third-party dependencies, from pyproject.toml.
    requirements = image_requirements(context / "pyproject.toml")
    log(f"requirements: {', '.join(requirements)}")
    pip_install_wheels(task, requirements)
    # 3. The project, --no-deps, from a copy of its build inputs (as the Dockerfile's
    #    /tmp/build), so the checkout gets no build/ or egg-info.
    build = workdir / "project-build"
    build.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(context / name, build / name)
    shutil.copytree(context / "src", build / "src")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-deps",
            "--target",
            task,
            build,
        ]
    )
    shutil.rmtree(build)
    compile_tree(python312, task)
    # The handler is copied after pip, so the image has no bytecode for it.
    shutil.copy2(context / "functions/master/app.py", task / "app.py")

    # The base image's runtime interface client, outside /var/task as in the image.
    runtime = workdir / "runtime"
    runtime.mkdir()
    pip_install_wheels(runtime, [f"awslambdaric=={importlib.metadata.version('awslambdaric')}"])
    compile_tree(python312, runtime)
    return task, ffmpeg, runtime


def bare_python(workdir: Path, python312: Path) -> Path:
    """A venv with no packages: the tree must carry everything, as in the image."""
    venv = workdir / "python"
    run([python312, "-m", "venv", "--without-pip", venv])
    return venv / "bin" / "python"


# ------------------------------------------------------------------ the emulated runtime


def copy_rie(dest_dir: Path) -> Path:
    import samcli

    name = f"aws-lambda-rie-{'arm64' if wheel_arch() == 'aarch64' else 'x86_64'}"
    source = Path(samcli.__file__).parent / "local" / "rapid" / name
    if not source.is_file():
        raise CheckError(f"aws-sam-cli ships no {name} at {source}")
    dest = dest_dir / "aws-lambda-rie"
    shutil.copyfile(source, dest)
    dest.chmod(0o755)
    return dest


def _descendants(pid: int) -> dict[int, str]:
    """Live processes below ``pid`` and their command lines (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = _command_line(child)
                pending.append(child)
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@dataclass
class EmulatedFunction:
    """The master function under the RIE, on loopback ports of its own."""

    rie: Path
    python: Path
    task: Path
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(self.rie),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{self.api_port}",
            "--log-level",
            "error",
            str(self.python),
            "-m",
            "awslambdaric",
            "app.handler",
        ]
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=self.task,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ImageFailure(f"aws-lambda-rie exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ImageFailure(f"aws-lambda-rie did not listen:\n{self.log_tail()}")

    def invoke(self, event: dict[str, Any]) -> Any:
        import requests

        response = requests.post(
            f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations",
            data=json.dumps(event),
            timeout=TIMEOUT_S + 60,
        )
        try:
            return response.json()
        except ValueError:
            return response.text  # e.g. "Task timed out after ..."

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # The emulator starts the runtime in a process group of its own: note it (and
        # anything it forked) first, stop the emulator, then whatever is left of those.
        below = _descendants(process.pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid, command in below.items():
            if _command_line(pid) == command:  # not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def function_environment(
    *,
    task: Path,
    runtime: Path,
    probe: Path,
    work_dir: Path,
    ffmpeg: Path,
    service: dict[str, str],
) -> dict[str, str]:
    """A Lambda sandbox's environment, built from scratch (not this process's)."""
    return {
        "PATH": f"{ffmpeg.parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": str(runtime),
        "PYTHONPATH": f"{task}:{runtime}:{probe}",
        "LD_LIBRARY_PATH": f"{task}:{task / 'lib'}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": "spectrum-mastering-master",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(TIMEOUT_S),
        # The Dockerfile's ENV.
        "FFMPEG_PATH": str(ffmpeg),
        "WORK_DIR": str(work_dir),
        "TMPDIR": str(work_dir),
        # The template's, for this function.
        "STAGE": "image-check",
        "MASTER_TIMEOUT_S": str(TIMEOUT_S),
        "LOG_LEVEL": "INFO",
        "POWERTOOLS_SERVICE_NAME": "spectrum-mastering",
        "POWERTOOLS_METRICS_NAMESPACE": "SpectrumMasteringImageCheck",
        "POWERTOOLS_TRACE_DISABLED": "1",
        # The handler module's cold import, timed by the probe's sitecustomize.
        "IMAGE_CHECK_TIMED_MODULE": "app",
        "IMAGE_CHECK_IMPORT_REPORT": str(probe / "import-seconds"),
        **service,
    }


def import_probe(workdir: Path) -> Path:
    probe = workdir / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return probe


def handler_import_s(probe: Path) -> float | None:
    """Seconds the runtime took to import the handler module; None if it never did."""
    seconds = probe / "import-seconds"
    return float(seconds.read_text()) if seconds.exists() else None


def slowest_imports(python: Path, task: Path, count: int = 12) -> list[tuple[float, str]]:
    """What ``import app`` spends its time on (-X importtime, outside the emulator).

    Only printed when the import goal is missed, to say where to look.
    """
    result = subprocess.run(
        [str(python), "-X", "importtime", "-c", "import app"],
        cwd=task,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(task), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
    )
    # -X importtime prints a module's imports (two spaces deeper) before the module.
    children: list[tuple[float, str]] = []
    for line in result.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        depth = (len(match.group(3)) - 1) // 2
        if depth == 1:
            children.append((int(match.group(2)) / 1e6, match.group(4)))
        elif depth == 0:
            if match.group(4) == "app":
                return sorted(children, reverse=True)[:count]
            children = []
    return []


def fft_backend(python: Path, task: Path) -> str:
    """Which FFTs the engine loads in the image's Python: scipy's compiled module
    alone (~2 ms: ``pyduccfft``, ``pypocketfft``) or ``scipy.fft`` (its fallback,
    ~0.18 s a process).
    The fallback works, so only this check notices scipy's layout changing under it."""
    result = subprocess.run(
        [str(python), "-c", "from mastering.engine import fft; print(fft.backend())"],
        cwd=task,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(task), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else f"failed: {result.stderr[-300:]}"


# ------------------------------------------------------------------ the job


@dataclass
class FakeContext:
    """What Powertools and the presign handler read from a Lambda context."""

    function_name: str = "spectrum-mastering-presign"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:spectrum-mastering-presign"
    )
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/spectrum-mastering-presign"
    log_stream_name: str = "image-check"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_presign() -> ModuleType:
    """``functions/presign/app.py`` under a name of its own (the master's is also app)."""
    spec = importlib.util.spec_from_file_location("presign_app", REPO / "functions/presign/app.py")
    if spec is None or spec.loader is None:
        raise CheckError("cannot load functions/presign/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_api(presign: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    # Powertools prints its metrics to stdout (and warns when there are none); this
    # process's stdout is the report.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        response = presign.handler(event, FakeContext())
    body = json.loads(response["body"]) if response.get("body") else {}
    return int(response["statusCode"]), body


def synthetic_target(path: Path, seconds: float) -> Path:
    """A quiet, tonal, stereo 16-bit WAV: something for the preset to master."""
    import numpy as np
    import soundfile as sf

    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(10)
    left = sum(
        np.sin(2 * np.pi * f * t + phase) / (k + 1)
        for k, (f, phase) in enumerate(
            zip((110.0, 220.0, 440.0, 1320.0, 3960.0), rng.random(5), strict=True)
        )
    )
    right = np.roll(left, 37) + 0.05 * rng.standard_normal(t.size)
    stereo = np.stack([left, right], axis=1)
    stereo *= 10 ** (-18 / 20) / np.max(np.abs(stereo))
    sf.write(path, stereo.astype(np.float32), RATE, subtype="PCM_16")
    return path


@dataclass
class JobOutcome:
    job_id: str
    payload: Any
    invocation_s: float
    job: dict[str, Any]
    downloads: dict[str, int]


def run_job(
    function: EmulatedFunction, presign: ModuleType, target: Path, results_bucket: str
) -> JobOutcome:
    import requests

    # POST /jobs with the preset event, declaring our file instead of its demo.mp3.
    post = json.loads((EVENTS / "api-post-jobs-preset.json").read_text())
    body = json.loads(post["body"])
    body["target"] = {
        "filename": target.name,
        "size": target.stat().st_size,
        "content_type": "audio/wav",
    }
    post["body"] = json.dumps(body)
    status, created = call_api(presign, post)
    if status != 201:
        raise ImageFailure(f"POST /jobs answered {status}: {created}")
    job_id = str(created["job_id"])
    upload = created["uploads"]["target"]
    with target.open("rb") as handle:
        uploaded = requests.post(
            upload["url"],
            data=upload["fields"],
            files={"file": (target.name, handle, upload["fields"]["Content-Type"])},
            timeout=30,
        )
    if uploaded.status_code not in (200, 201, 204):
        raise ImageFailure(f"the presigned upload answered {uploaded.status_code}: {uploaded.text}")

    # S3's ObjectCreated event for that upload, to the master function.
    event = json.loads((EVENTS / "s3-put-target.json").read_text())
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = os.environ["UPLOADS_BUCKET"]
    record["bucket"]["arn"] = f"arn:aws:s3:::{os.environ['UPLOADS_BUCKET']}"
    record["object"]["key"] = upload["fields"]["key"]
    record["object"]["size"] = target.stat().st_size
    started = time.monotonic()
    payload = function.invoke(event)
    invocation_s = time.monotonic() - started

    # What the owner sees, and the results they download.
    get = copy.deepcopy(json.loads((EVENTS / "api-get-job.json").read_text()))
    get["pathParameters"] = {"job_id": job_id}
    get["rawPath"] = get["requestContext"]["http"]["path"] = f"/jobs/{job_id}"
    status, job = call_api(presign, get)
    if status != 200:
        raise ImageFailure(f"GET /jobs/{job_id} answered {status}: {job}")
    downloads: dict[str, int] = {}
    for fmt, result in (job.get("results") or {}).items():
        url = urllib.parse.urlsplit(result["url"])
        bucket = url.path.lstrip("/").split("/", 1)[0]
        fetched = requests.get(result["url"], timeout=30)
        if fetched.status_code == 200 and bucket == results_bucket and fetched.content:
            downloads[fmt] = len(fetched.content)
    return JobOutcome(job_id, payload, invocation_s, job, downloads)


@contextlib.contextmanager
def moto_stack(names: dict[str, str]) -> Iterator[str]:
    """A moto server on loopback holding the buckets and table; yields its URL."""
    from moto.server import ThreadedMotoServer

    # Its request log would drown the report.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        os.environ.update({**names, "AWS_ENDPOINT_URL": endpoint})
        from mastering.config import load_settings
        from mastering.devstack.resources import create_resources

        create_resources(load_settings())
        yield endpoint
    finally:
        server.stop()


def isolate_from_real_aws(work_dir: Path) -> None:
    """Fake credentials only, and never the developer's profile or an instance role."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "API_KEY_PARAMETER"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work_dir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work_dir / "no-aws-credentials"),
            "API_KEY": API_KEY,
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_SERVICE_NAME": "spectrum-mastering",
            "POWERTOOLS_METRICS_NAMESPACE": "SpectrumMasteringImageCheck",
        }
    )


def snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


# ------------------------------------------------------------------ main


def check(args: argparse.Namespace, workdir: Path) -> bool:
    """Build, run, report; True when every goal is met."""
    python312 = find_python312(args.python)
    log(f"Python {PYTHON_VERSION}: {python312}")
    context = workdir / "context"
    context.mkdir()
    context_files, context_mb = stage_context(context)

    build_started = time.monotonic()
    task, ffmpeg, runtime = build_image_tree(workdir, context, python312)
    build_s = time.monotonic() - build_started
    python = bare_python(workdir, python312)
    probe = import_probe(workdir)
    tree_mb = megabytes(task)
    ffmpeg_mb = ffmpeg.stat().st_size / 1e6

    sandbox_tmp = workdir / "tmp"  # the function's /tmp
    sandbox_tmp.mkdir()
    isolate_from_real_aws(sandbox_tmp)
    names = {
        "JOBS_TABLE": "spectrum-mastering-jobs-imagecheck",
        "UPLOADS_BUCKET": "spectrum-mastering-uploads-imagecheck",
        "RESULTS_BUCKET": "spectrum-mastering-results-imagecheck",
    }
    target = synthetic_target(workdir / "image check target.wav", args.seconds)
    code_before = snapshot(task)
    with moto_stack(names) as endpoint:
        service = {
            **names,
            "AWS_ENDPOINT_URL": endpoint,
            **{
                name: os.environ[name]
                for name in (
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN",
                    "AWS_DEFAULT_REGION",
                    "AWS_REGION",
                    "AWS_EC2_METADATA_DISABLED",
                    "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE",
                )
            },
        }
        function = EmulatedFunction(
            rie=copy_rie(workdir),
            python=python,
            task=task,
            env=function_environment(
                task=task,
                runtime=runtime,
                probe=probe,
                work_dir=sandbox_tmp,
                ffmpeg=ffmpeg,
                service=service,
            ),
            log_path=workdir / "function.log",
        )
        presign = load_presign()
        function.start()
        try:
            outcome = run_job(function, presign, target, names["RESULTS_BUCKET"])
        finally:
            function.stop()
    written = sorted(snapshot(task) - code_before)
    return report(
        Figures(
            context_files=context_files,
            context_mb=context_mb,
            build_s=build_s,
            tree_mb=tree_mb,
            largest=largest_entries(task),
            ffmpeg_mb=ffmpeg_mb,
            import_s=handler_import_s(probe),
            fft=fft_backend(python, task),
            task=task,
            outcome=outcome,
            # Only the handler may compile at run time: the Dockerfile copies it after pip.
            compiled_at_run_time=[
                path for path in written if not re.fullmatch(r"__pycache__(/app\..*)?", path)
            ],
        ),
        args,
        function,
        python,
    )


@dataclass
class Figures:
    context_files: int
    context_mb: float
    build_s: float
    tree_mb: float
    largest: list[tuple[float, str]]
    ffmpeg_mb: float
    import_s: float | None
    fft: str
    task: Path
    outcome: JobOutcome
    compiled_at_run_time: list[str]


def report(
    figures: Figures, args: argparse.Namespace, function: EmulatedFunction, python: Path
) -> bool:
    """Print the figures (stdout) and what went wrong (stderr); True when all is well."""
    outcome = figures.outcome
    status = outcome.job.get("status")
    succeeded = (
        outcome.payload == {"jobs": {outcome.job_id: "succeeded"}}
        and status == "succeeded"
        and bool(outcome.downloads)
        and set(outcome.downloads) == set(outcome.job.get("results") or {})
    )
    tree_ok = figures.tree_mb <= args.max_tree_mb
    import_ok = figures.import_s is not None and figures.import_s <= args.max_import_s
    missed = "  MISSED"

    print(f"build context   {figures.context_files} files, {figures.context_mb:.2f} MB")
    print(f"image build     {figures.build_s:.1f} s (ffmpeg, pip, bytecode; without Docker)")
    print(
        f"tree            {figures.tree_mb:.1f} MB without ffmpeg (goal <= "
        f"{args.max_tree_mb:g} MB){'' if tree_ok else missed}; ffmpeg {figures.ffmpeg_mb:.1f} MB"
    )
    print("  largest       " + ", ".join(f"{name} {mb:.0f} MB" for mb, name in figures.largest))
    imported = "never completed" if figures.import_s is None else f"{figures.import_s:.3f} s"
    print(
        f"handler import  {imported} cold, in the emulated runtime "
        f"(goal <= {args.max_import_s:g} s){'' if import_ok else missed}"
    )
    fft_ok = figures.fft in ("pyduccfft", "pypocketfft")
    print(
        f"engine FFTs     {figures.fft} (goal: scipy's compiled module loaded alone, "
        f"not scipy.fft){'' if fft_ok else missed}"
    )
    processing = (outcome.job.get("metrics") or {}).get("processing_s")
    results = ", ".join(f"{fmt} {size / 1e6:.2f} MB" for fmt, size in outcome.downloads.items())
    print(
        f"job             {status} ({args.seconds:g} s preset target): invocation "
        f"{outcome.invocation_s:.2f} s from cold start, processing_s {processing}; "
        f"results: {results or 'none'}"
    )
    if not succeeded:
        log(f"the job did not succeed: payload {outcome.payload!r}, job {outcome.job!r}")
        log(f"function log (tail):\n{function.log_tail()}")
    if figures.import_s is not None and not import_ok:
        slowest = ", ".join(
            f"{name} {seconds:.3f} s" for seconds, name in slowest_imports(python, figures.task)
        )
        log(f"what `import app` spends its time on (-X importtime): {slowest}")
    if figures.compiled_at_run_time:
        log(
            "modules compiled at run time (no bytecode in the image): "
            f"{figures.compiled_at_run_time[:20]}"
        )
    return succeeded and tree_ok and import_ok and fft_ok and not figures.compiled_at_run_time


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` for a fresh build, but only if a previous check made it."""
    marker = workdir / WORKDIR_MARKER
    if workdir.exists():
        if any(workdir.iterdir()) and not marker.exists():
            raise CheckError(f"{workdir} is not empty and not an image-check workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    marker.write_text("made by tools/image_check.py; emptied on every run\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--python", help=f"a Python {PYTHON_VERSION} interpreter")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "build" / "image-check",
        help="scratch folder, emptied first (default: build/image-check, git-ignored)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir after a pass")
    parser.add_argument("--seconds", type=float, default=10.0, help="target length")
    parser.add_argument("--max-tree-mb", type=float, default=TREE_GOAL_MB)
    parser.add_argument("--max-import-s", type=float, default=IMPORT_GOAL_S)
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    started = time.monotonic()
    try:
        prepare_workdir(workdir)
        ok = check(args, workdir)
    except CheckError as error:
        log(f"cannot check: {error}")
        return 2
    except ImageFailure as error:
        log(f"FAILED: {error} (workdir kept: {workdir})")
        return 1
    print(f"total           {time.monotonic() - started:.1f} s")
    if not ok:
        log(f"FAILED (workdir kept: {workdir})")
        return 1
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print("image-check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
