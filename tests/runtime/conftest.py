"""Fixtures that run the functions under the Lambda Runtime Interface Emulator.

``lambda_runtime`` starts a function the way Lambda would (see ``rie.py``) against
the moto server of ``tests/conftest.py``, after ``stack`` has reset it and created
the buckets and table. The runtime's environment is built from scratch: the
``monkeypatch`` settings ``stack`` makes apply to this process only.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.runtime.rie import (
    Runtime,
    build_task_root,
    copy_rie,
    lambda_environment,
    set_writable,
)

# The key the files in events/ carry; the in-process tests use another one.
RUNTIME_API_KEY = "local-dev-key"

RuntimeFactory = Callable[..., Runtime]


@pytest.fixture(scope="session")
def rie_binary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("rie-bin")
    yield copy_rie(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def lambda_runtime(stack: Stack, rie_binary: Path, tmp_path: Path) -> Iterator[RuntimeFactory]:
    """``lambda_runtime(function, handler, timeout_s, memory_mb, extra_env) -> Runtime``."""
    started: list[Runtime] = []
    counter = itertools.count()

    def start(
        function: str = "presign",
        handler: str = "app.handler",
        *,
        timeout_s: int = 30,
        memory_mb: int = 512,
        extra_env: dict[str, str] | None = None,
    ) -> Runtime:
        sandbox = tmp_path / f"lambda-{function}-{next(counter)}"
        sandbox.mkdir()
        task_root = build_task_root(function, sandbox / "task")
        work_dir = sandbox / "tmp"
        work_dir.mkdir()
        service_env = {
            name: os.environ[name]
            for name in ("JOBS_TABLE", "UPLOADS_BUCKET", "RESULTS_BUCKET", "ALLOWED_ORIGINS")
        }
        service_env.update({"API_KEY": RUNTIME_API_KEY, "AWS_ENDPOINT_URL": stack.endpoint})
        runtime = Runtime(
            function=function,
            handler=handler,
            rie=rie_binary,
            task_root=task_root,
            work_dir=work_dir,
            log_path=sandbox / "function.log",
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            env=lambda_environment(
                function_name=f"spectrum-mastering-{function}",
                task_root=task_root,
                work_dir=work_dir,
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                service_env=service_env,
                extra_env=extra_env,
            ),
        )
        started.append(runtime)
        runtime.start()
        return runtime

    yield start

    for runtime in started:
        try:
            runtime.stop()
        finally:
            set_writable(runtime.task_root, writable=True)
            shutil.rmtree(runtime.task_root.parent, ignore_errors=True)
