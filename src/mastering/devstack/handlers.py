"""Loading the Lambda handlers from ``functions/`` and giving them a Lambda context.

The handlers live outside the package, as in Lambda, and two of them are called
``app.py``; each is imported from its file under a module name of its own, the way
the tests load them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import mastering
from mastering.devstack.defaults import ENV_FUNCTIONS_DIR

# moto's default account: ARNs the local stack shows use it.
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
STACK_NAME = "spectrum-mastering-local"


class HandlersNotFound(Exception):
    """The functions/ folder with the handlers is not where the stack looks."""


def functions_dir() -> Path:
    """``functions/`` of the source checkout this package is installed from (editable).

    ``MASTERING_FUNCTIONS_DIR`` points elsewhere, e.g. at a built copy.
    """
    configured = os.environ.get(ENV_FUNCTIONS_DIR, "").strip()
    if configured:
        found = Path(configured).expanduser().resolve()
    else:
        # src/mastering/__init__.py -> the repository root is two levels above src/mastering.
        found = Path(mastering.__file__).resolve().parents[2] / "functions"
    if not (found / "presign" / "app.py").is_file() or not (found / "master" / "app.py").is_file():
        raise HandlersNotFound(
            f"no Lambda handlers in {found} (expected presign/app.py and master/app.py); "
            f"run from a source checkout or set {ENV_FUNCTIONS_DIR}"
        )
    return found


def load_function(folder: Path, function: str, module: str = "app") -> ModuleType:
    """Import ``<folder>/<function>/<module>.py`` afresh, under a unique module name.

    Afresh because the handler modules read part of their configuration (CORS, the
    tracer switch) from the environment at import, as a cold start does.
    """
    name = f"mastering_local_{function}_{module}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, folder / function / f"{module}.py")
    if spec is None or spec.loader is None:
        raise HandlersNotFound(f"cannot load {folder / function / module}.py")
    loaded = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses and typing can resolve the module's own names.
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return loaded


def unload_function(module: ModuleType) -> None:
    sys.modules.pop(module.__name__, None)


def function_name(logical: str) -> str:
    """The deployed name of a function (template.yaml: ``${AWS::StackName}-<logical>``)."""
    return f"{STACK_NAME}-{logical}"


def function_arn(logical: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name(logical)}"


class LocalLambdaContext:
    """The parts of a Lambda context that Powertools and the handlers read."""

    def __init__(self, logical: str, *, timeout_s: float, memory_mb: int) -> None:
        self._deadline = time.monotonic() + timeout_s
        self.function_name = function_name(logical)
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = function_arn(logical)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
