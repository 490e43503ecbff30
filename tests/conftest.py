"""Shared fixtures: a moto server standing in for S3 and DynamoDB, the service's
environment, Lambda contexts, and clients that drive the handlers with the events
in ``events/``.

The environment is set here, before any test imports a handler module.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import pytest
import requests

if TYPE_CHECKING:
    from mastering.config import Settings
    from mastering.devstack.resources import WebhookQueues
    from mastering.jobs.store import DynamoJobStore
    from mastering.storage.objects import S3Storage

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"
API_KEY = "test-api-key"

_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "JOBS_TABLE": "spectrum-mastering-jobs-test",
    "UPLOADS_BUCKET": "spectrum-mastering-uploads-test",
    "RESULTS_BUCKET": "spectrum-mastering-results-test",
    "API_KEY": API_KEY,
    "MASTER_TIMEOUT_S": "360",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "spectrum-mastering",
    "POWERTOOLS_METRICS_NAMESPACE": "SpectrumMasteringTest",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "ALLOWED_ORIGINS": "https://app.spectrum.test",
}
os.environ.update(_TEST_ENV)
# What a process started by a test should not inherit to behave as in a user's shell.
TEST_ENV_NAMES = frozenset(_TEST_ENV)
for _name in ("AWS_PROFILE", "API_KEY_PARAMETER", "AWS_ENDPOINT_URL", "PUBLIC_S3_ENDPOINT_URL"):
    os.environ.pop(_name, None)

# The handlers live outside the package, as in Lambda. Both functions call their
# module app.py, so each is loaded under a name of its own (see load_handler).


def load_handler(function: str, module: str = "app") -> Any:
    """Import ``functions/<function>/<module>.py`` once, under a unique name."""
    name = f"{function}_{module}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "functions" / function / f"{module}.py"
        )
        assert spec is not None
        assert spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
    return sys.modules[name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


# The functions that run in this process, as the tests load them (load_handler).
IN_PROCESS_FUNCTIONS = (
    ("presign", "app"),
    ("presign", "lifecycle"),
    ("presign", "job_events"),
    ("presign", "webhook_sender"),
    ("master", "app"),
)


@dataclass
class Stack:
    """The emulated AWS resources of one test, the functions' settings and their /tmp."""

    endpoint: str
    work_dir: Path
    settings: Settings
    # The webhook queue (whose URL the settings carry), its dead letters, and the
    # job-events function's failure queue.
    queues: WebhookQueues

    def leftovers(self) -> list[str]:
        """Anything a job left in the function's /tmp."""
        return sorted(p.name for p in self.work_dir.iterdir()) if self.work_dir.exists() else []

    def configure(self, **changes: Any) -> Settings:
        """Give the functions these settings (as a cold start with this environment
        would): ``stack.configure(max_duration_s=5)``."""
        self.settings = dataclasses.replace(self.settings, **changes)
        for function, module in IN_PROCESS_FUNCTIONS:
            load_handler(function, module).configure(self.settings)
        return self.settings

    def store(self) -> DynamoJobStore:
        """The jobs table, as the functions see it."""
        from mastering.jobs.store import DynamoJobStore

        settings = self.settings
        return DynamoJobStore(
            settings.jobs_table, aws=settings.aws, retention_days=settings.job_retention_days
        )

    def storage(self) -> S3Storage:
        from mastering.storage.objects import S3Storage

        return S3Storage(self.settings.aws)


def function_settings() -> Settings:
    """The settings the functions run with in this test (see ``Stack.configure``)."""
    settings: Settings = load_handler("master").ports().settings
    return settings


def emulated_s3() -> Any:
    """An S3 client on the test's emulator, for looking behind the service's back."""
    from mastering import clients

    return clients.s3_client(function_settings().aws)


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path) -> Iterator[Stack]:
    from mastering import clients
    from mastering.config import AwsSettings, load_settings
    from mastering.devstack.resources import create_resources, create_webhook_queues

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    work_dir = tmp_path / "lambda-tmp"
    work_dir.mkdir()
    settings = dataclasses.replace(
        load_settings(_TEST_ENV),
        work_dir=work_dir,
        aws=AwsSettings(
            region="us-east-1",
            s3_addressing_style="path",
            endpoint_url=moto_endpoint,
            static_credentials=("testing", "testing"),
        ),
    )
    clients.reset_clients()
    create_resources(settings)
    queues = create_webhook_queues(
        settings.aws,
        events="spectrum-mastering-webhooks-test",
        dead_letters="spectrum-mastering-webhooks-dlq-test",
        relay_failures="spectrum-mastering-job-events-dlq-test",
    )
    settings = dataclasses.replace(settings, webhook_queue_url=queues.events.url)
    emulated = Stack(endpoint=moto_endpoint, work_dir=work_dir, settings=settings, queues=queues)
    emulated.configure()
    yield emulated
    clients.reset_clients()


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


class FakeLambdaContext:
    """What Powertools and the handlers read from a Lambda context."""

    def __init__(self, remaining_s: float = 900.0, name: str = "test-function") -> None:
        import time

        self._deadline = time.monotonic() + remaining_s
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 3008
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = "11111111-2222-3333-4444-555555555555"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class ApiClient:
    """Calls the presign handler with API Gateway HTTP API events from ``events/``."""

    def __init__(self) -> None:
        self.module = load_handler("presign")

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw_body: str | None = None,
        api_key: str | None = API_KEY,
        owner: str | None = "user-1",
        headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        template = {
            ("POST", "/jobs"): "api-post-jobs.json",
            ("GET", "/presets"): "api-get-presets.json",
            ("GET", "/health"): "api-get-health.json",
        }.get((method, path.partition("?")[0]), "api-get-job.json")
        path, _, query = path.partition("?")
        event = copy.deepcopy(load_event(template))
        event["rawPath"] = path
        event["rawQueryString"] = query
        if query:
            event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
        else:
            event.pop("queryStringParameters", None)
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
        if path.startswith("/jobs/"):
            event["pathParameters"] = {"job_id": path.removeprefix("/jobs/").split("/")[0]}
        event["headers"] = {"content-type": "application/json", **(headers or {})}
        if api_key is not None:
            event["headers"]["x-api-key"] = api_key
        if owner is not None:
            event["headers"]["x-owner-id"] = owner
        if raw_body is not None:
            event["body"] = raw_body
        elif body is not None:
            event["body"] = json.dumps(body)
        else:
            event.pop("body", None)
        event["isBase64Encoded"] = False
        response = self.module.handler(event, FakeLambdaContext(30, "presign"))
        return ApiResponse(
            status=response["statusCode"],
            body=json.loads(response["body"]) if response.get("body") else {},
            headers={k.lower(): v for k, v in (response.get("headers") or {}).items()},
        )


@pytest.fixture
def api(stack: Stack) -> ApiClient:
    return ApiClient()


def s3_event_for(key: str, size: int, bucket: str | None = None) -> dict[str, Any]:
    """The S3 ObjectCreated event S3 sends for ``key``, built from events/."""
    role = key.rsplit("/", 1)[-1]
    name = "s3-put-reference.json" if role == "reference" else "s3-put-target.json"
    event = copy.deepcopy(load_event(name))
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket or os.environ["UPLOADS_BUCKET"]
    record["s3"]["object"]["key"] = key
    record["s3"]["object"]["size"] = size
    return event


@pytest.fixture
def invoke_master(stack: Stack) -> Callable[..., dict[str, Any]]:
    module = load_handler("master")

    def invoke(event: dict[str, Any], remaining_s: float = 900.0) -> dict[str, Any]:
        result: dict[str, Any] = module.handler(event, FakeLambdaContext(remaining_s, "master"))
        return result

    return invoke
