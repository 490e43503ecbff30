"""The whole service on one machine, running the same handlers as in AWS.

- a moto server on ``host:s3_port`` stands in for S3, DynamoDB and SQS, with the
  buckets and table of template.yaml, and the uploads bucket's ObjectCreated
  notifications (prefix ``uploads/``) routed to a queue;
- the presign function behind a local HTTP API (``http_gateway``);
- ``workers`` master-function sandboxes (``s3_worker`` processes) fed from that
  queue, with the lifecycle function as their on-failure destination;
- the lifecycle function's sweep, every minute as the EventBridge schedule runs it;
- the jobs table's stream feeding the job-events function, and the webhook queue
  (with its dead-letter queue) feeding the webhook sender, each polled by a thread
  as Lambda's event source mappings would (``event_sources``).

The stack builds the functions' ``Settings`` itself and hands them to the presign and
lifecycle functions that run in this process (``configure``); the worker processes,
being Lambda sandboxes, get the same values as the environment variables
template.yaml sets. This process's own environment is left alone. Used by
``mastering serve`` and by tests.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mastering import SERVICE_NAME
from mastering.config import DEFAULT_WEBHOOK_PORTS, AwsSettings, Settings, WebhookSettings
from mastering.devstack import defaults
from mastering.devstack.event_sources import QueueSource, StreamSource
from mastering.devstack.handlers import (
    ACCOUNT_ID,
    REGION,
    STACK_NAME,
    HandlersNotFound,
    LocalLambdaContext,
    function_arn,
    functions_dir,
    load_function,
    unload_function,
)
from mastering.devstack.http_gateway import ApiGateway, CorsRules
from mastering.devstack.processes import PortInUse, check_port_free, free_port, stop_process
from mastering.devstack.s3_worker import (
    RECEIVE_VISIBILITY_S,
    crash_message,
    failure_record,
    read_in_flight,
)

if TYPE_CHECKING:
    from mastering.devstack.resources import WebhookQueues

logger = logging.getLogger("mastering.devstack.stack")

# template.yaml: the presign function's and the lifecycle function's settings.
PRESIGN_TIMEOUT_S = 15
PRESIGN_MEMORY_MB = 512
LIFECYCLE_TIMEOUT_S = 120
LIFECYCLE_MEMORY_MB = 256
JOB_EVENTS_TIMEOUT_S = 60
JOB_EVENTS_MEMORY_MB = 256
WEBHOOK_SENDER_TIMEOUT_S = 90
WEBHOOK_SENDER_MEMORY_MB = 256

# A worker that dies this soon after starting counts as crashing, not as worn out.
_QUICK_DEATH_S = 10.0
_MAX_RESTART_DELAY_S = 30.0

# Variables that would send the worker sandboxes somewhere other than this stack.
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "API_KEY_PARAMETER",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_SECRET_PARAMETER",
)

__all__ = ["HandlersNotFound", "LocalStack", "PortInUse", "StackConfig", "StackError"]


class StackError(Exception):
    """The stack could not start; the message says why, in one line."""


@dataclass(frozen=True)
class StackNames:
    uploads_bucket: str = f"{STACK_NAME}-uploads"
    results_bucket: str = f"{STACK_NAME}-results"
    jobs_table: str = f"{STACK_NAME}-jobs"
    upload_queue: str = f"{STACK_NAME}-upload-events"
    webhook_queue: str = f"{STACK_NAME}-webhooks"
    webhook_dead_letters: str = f"{STACK_NAME}-webhooks-dlq"
    job_events_dead_letters: str = f"{STACK_NAME}-job-events-dlq"


@dataclass(frozen=True)
class StackConfig:
    host: str = defaults.LOCAL_HOST
    # 0 picks a free port.
    api_port: int = defaults.API_PORT
    s3_port: int = defaults.S3_PORT
    api_key: str = defaults.API_KEY
    workers: int = 1
    # The sandboxes' /tmp live under this; None: a temporary directory, removed at stop.
    work_dir: Path | None = None
    allowed_origins: tuple[str, ...] = defaults.ALLOWED_ORIGINS
    master_timeout_s: int = defaults.MASTER_TIMEOUT_S
    sweep_interval_s: float = 60.0
    functions_dir: Path | None = None
    # How long a worker may take to finish after being asked to stop.
    stop_grace_s: float = 15.0
    # Where job.succeeded / job.failed / job.expired / job.cancelled webhooks go (e.g.
    # the edge function served locally by Supabase), signed with this secret. None:
    # no webhooks.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Multiplies the webhook retry schedule (5 s, 5 min, … 10 h); tests shorten it.
    webhook_retry_scale: float = 1.0
    # How often the jobs table's stream is read when it had nothing new.
    stream_poll_interval_s: float = 1.0
    names: StackNames = field(default_factory=StackNames)


def _client_host(host: str) -> str:
    # A wildcard bind address is not something a client can connect to.
    return defaults.LOCAL_HOST if host in ("", "0.0.0.0", "::") else host  # noqa: S104


def schedule_event() -> dict[str, Any]:
    """The EventBridge scheduled event the lifecycle function's sweep runs on."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{STACK_NAME}-sweep"],
        "detail": {},
    }


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._gateway: ApiGateway | None = None
        self._moto: Any = None
        self._s3_port = self.config.s3_port
        self._presign: ModuleType | None = None
        self._lifecycle: ModuleType | None = None
        self._job_events: ModuleType | None = None
        self._webhook_sender: ModuleType | None = None
        self._pollers: list[threading.Thread] = []
        self._webhook_queues: WebhookQueues | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._queue_url = ""
        self._functions = Path()
        self._work_dir: Path | None = None
        self._own_work_dir = False
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        # One invocation at a time, as in one warm Lambda sandbox: the handler
        # modules keep the current event in module state (Powertools' resolver).
        self._invoke_lock = threading.Lock()
        # Per worker slot: when it was spawned, quick deaths in a row, next restart.
        self._started_at: dict[int, float] = {}
        self._crashes: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self.started = False

    # ------------------------------------------------------------------ addresses

    @property
    def api_url(self) -> str:
        assert self._gateway is not None, "start() first"
        return f"http://{_client_host(self.config.host)}:{self._gateway.port}"

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """The configured origins, and the stack's own web page's (served at ``/`` of the
        API port): the page uploads to and plays from the emulated buckets, another
        origin, so their CORS rules must name it whatever else is configured."""
        assert self._gateway is not None, "start() first"
        port = self._gateway.port
        own = [f"http://127.0.0.1:{port}", f"http://localhost:{port}", self.api_url]
        return tuple(dict.fromkeys([*self.config.allowed_origins, *own]))

    @property
    def s3_url(self) -> str:
        return f"http://{_client_host(self.config.host)}:{self._s3_port}"

    @property
    def work_dir(self) -> Path:
        assert self._work_dir is not None, "start() first"
        return self._work_dir

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live worker sandboxes."""
        return [p.pid for p in self._workers if p.poll() is None]

    @property
    def webhook_queues(self) -> WebhookQueues:
        assert self._webhook_queues is not None, "start() first"
        return self._webhook_queues

    def settings(self) -> Settings:
        """The functions' settings: template.yaml's, with this stack's names and values."""
        config, names = self.config, self.config.names
        webhook = None
        if config.webhook_url:
            # Locally the receiver is on this machine, at a port of its own, which
            # deployed code refuses.
            port = urlsplit(config.webhook_url).port
            webhook = WebhookSettings(
                url=config.webhook_url,
                secret=config.webhook_secret,
                allow_loopback=True,
                allowed_ports=DEFAULT_WEBHOOK_PORTS | ({port} if port else set()),
                retry_scale=config.webhook_retry_scale,
            )
        queues = self._webhook_queues
        return Settings(
            jobs_table=names.jobs_table,
            uploads_bucket=names.uploads_bucket,
            results_bucket=names.results_bucket,
            master_timeout_s=config.master_timeout_s,
            allowed_origins=self.allowed_origins,
            work_dir=self.work_dir / "functions",
            stage="local",
            api_key=config.api_key,
            webhook=webhook,
            webhook_queue_url=queues.events.url if queues else None,
            aws=AwsSettings(
                region=REGION,
                s3_addressing_style="path",
                endpoint_url=self.s3_url,
                static_credentials=("local", "local"),
            ),
        )

    def handler_env(self) -> dict[str, str]:
        """The environment the master function gets (template.yaml's names, local
        values); it sends no webhooks, so it has no webhook settings."""
        names = self.config.names
        return {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.s3_url,
            "JOBS_TABLE": names.jobs_table,
            "UPLOADS_BUCKET": names.uploads_bucket,
            "RESULTS_BUCKET": names.results_bucket,
            "API_KEY": self.config.api_key,
            "STAGE": "local",
            "MASTER_TIMEOUT_S": str(self.config.master_timeout_s),
            "ALLOWED_ORIGINS": ",".join(self.allowed_origins),
            "WORK_DIR": str(self.work_dir / "functions"),
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": "SpectrumMastering",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        }

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything; on any failure, undo what was started and raise."""
        if self.started or self._stopping.is_set():
            raise StackError("a LocalStack starts once; make a new one")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started = True

    def _start(self) -> None:
        config = self.config
        if config.workers < 1:
            raise StackError("at least one worker is needed")
        if config.webhook_url and not config.webhook_secret:
            raise StackError("a webhook URL needs a webhook secret to sign with")
        if not 0 <= config.webhook_retry_scale <= 1:
            raise StackError("the webhook retry scale must be within 0..1")
        try:
            self._functions = config.functions_dir or functions_dir()
        except HandlersNotFound as error:
            raise StackError(str(error)) from error
        self._bind_ports()
        self._start_moto()
        self._prepare_work_dir()
        from mastering.devstack.resources import (
            create_resources,
            create_upload_notifications,
            create_webhook_queues,
        )

        settings = self.settings()
        create_resources(settings)
        self._queue_url = create_upload_notifications(
            settings,
            config.names.upload_queue,
            visibility_timeout_s=RECEIVE_VISIBILITY_S,
        )
        self._webhook_queues = create_webhook_queues(
            settings.aws,
            events=config.names.webhook_queue,
            dead_letters=config.names.webhook_dead_letters,
            relay_failures=config.names.job_events_dead_letters,
        )
        settings = self.settings()
        self._presign = load_function(self._functions, "presign")
        self._presign.configure(settings)
        self._lifecycle = load_function(self._functions, "presign", "lifecycle")
        self._lifecycle.configure(settings)
        self._job_events = load_function(self._functions, "presign", "job_events")
        self._job_events.configure(settings)
        self._webhook_sender = load_function(self._functions, "presign", "webhook_sender")
        self._webhook_sender.configure(settings)
        for index in range(1, config.workers + 1):
            self._workers.append(self._spawn_worker(index))
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sweep", daemon=True)
        self._sweeper.start()
        self._start_event_sources(settings)
        # Last, so that an answer on /health means everything else is in place.
        assert self._gateway is not None
        self._gateway.start()
        logger.info("local stack up: API %s, S3 %s", self.api_url, self.s3_url)

    def _bind_ports(self) -> None:
        config = self.config
        if config.s3_port and config.s3_port == config.api_port:
            raise StackError(f"the API and S3 ports must differ (both are {config.s3_port})")
        self._s3_port = config.s3_port or free_port(config.host)
        # Checked before moto starts: its server thread would hang on a taken port.
        check_port_free(config.host, self._s3_port, what="S3 emulator")
        cors = CorsRules(config.allowed_origins) if config.allowed_origins else None
        try:
            self._gateway = ApiGateway(config.host, config.api_port, self._invoke_api, cors=cors)
        except OSError as error:
            if config.api_port and error.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(config.host, config.api_port, "HTTP API") from error
            where = f"{config.host}:{config.api_port}"
            raise StackError(f"cannot listen on {where}: {error.strerror}") from error

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        class GuardedMotoServer(ThreadedMotoServer):
            """Reports a failed bind instead of leaving ``start()`` waiting forever."""

            bind_error: OSError | None = None

            def _server_entry(self) -> None:
                try:
                    super()._server_entry()
                except OSError as error:
                    self.bind_error = error
                    self._server_ready_event.set()

        # werkzeug logs every emulator request at INFO; the API's access log is enough.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = GuardedMotoServer(ip_address=self.config.host, port=self._s3_port, verbose=False)
        server.start()
        if server.bind_error is not None:
            raise PortInUse(self.config.host, self._s3_port, "S3 emulator") from server.bind_error
        self._moto = server

    def _prepare_work_dir(self) -> None:
        if self.config.work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="mastering-local-"))
            self._own_work_dir = True
        else:
            self._work_dir = self.config.work_dir.expanduser().resolve()
            self._work_dir.mkdir(parents=True, exist_ok=True)
        (self._work_dir / "functions").mkdir(exist_ok=True)

    def _in_flight_file(self, index: int) -> Path:
        return self.work_dir / f"worker-{index}.in-flight.json"

    def _spawn_worker(self, index: int) -> subprocess.Popen[bytes]:
        sandbox = self.work_dir / f"worker-{index}"
        # A fresh /tmp, as Lambda gives a sandbox that replaces a crashed one: what a
        # killed worker was writing does not outlive it.
        shutil.rmtree(sandbox, ignore_errors=True)
        sandbox.mkdir()
        command = [
            sys.executable,
            "-m",
            "mastering.devstack.s3_worker",
            "--queue-url",
            self._queue_url,
            "--functions-dir",
            str(self._functions),
            "--name",
            f"worker-{index}",
            "--in-flight",
            str(self._in_flight_file(index)),
        ]
        self._started_at[index - 1] = time.monotonic()
        # The worker asks the kernel to end it with this process (--parent-pid), so a
        # stack that is killed outright leaves no sandbox behind.
        command += ["--parent-pid", str(os.getpid())]
        env = {key: value for key, value in os.environ.items() if key not in _CLEARED_ENV}
        env.update(self.handler_env())
        env["WORK_DIR"] = str(sandbox)
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    def supervise(self) -> None:
        """Replace worker processes that died, as Lambda replaces a crashed sandbox.

        One that keeps dying at once (say, a handler that no longer imports) is
        restarted less and less often, up to every ``_MAX_RESTART_DELAY_S``.
        """
        if self._stopping.is_set():
            return
        now = time.monotonic()
        for slot, process in enumerate(self._workers):
            status = process.poll()
            if status is None:
                continue
            if slot not in self._restart_at:
                self._report_crash(slot + 1, status)
                lived = now - self._started_at.get(slot, now)
                crashes = self._crashes.get(slot, 0) + 1 if lived < _QUICK_DEATH_S else 1
                self._crashes[slot] = crashes
                delay = min(_MAX_RESTART_DELAY_S, 2.0 ** (crashes - 1))
                logger.warning(
                    "worker-%d exited with status %s; starting another in %.0f s",
                    slot + 1,
                    status,
                    delay,
                )
                self._restart_at[slot] = now + delay
            elif now >= self._restart_at[slot]:
                del self._restart_at[slot]
                self._workers[slot] = self._spawn_worker(slot + 1)

    def _report_crash(self, index: int, status: int) -> None:
        """Give the event a dead worker was handling to the on-failure destination."""
        event = read_in_flight(self._in_flight_file(index))
        if event is None or self._lifecycle is None:
            return
        message = crash_message(status)
        logger.warning("worker-%d died during an invocation (%s)", index, message)
        context = LocalLambdaContext(
            "lifecycle", timeout_s=LIFECYCLE_TIMEOUT_S, memory_mb=LIFECYCLE_MEMORY_MB
        )
        try:
            with self._invoke_lock:
                self._lifecycle.handler(
                    failure_record(event, message, "Runtime.ExitError"), context
                )
        except Exception:
            logger.exception("the lifecycle function failed on the failure record")

    def stop(self) -> None:
        """Stop everything that was started; safe to call more than once."""
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None
        for poller in self._pollers:
            poller.join()
        self._pollers.clear()
        for process in self._workers:
            status = stop_process(process, sig=signal.SIGTERM, grace_s=self.config.stop_grace_s)
            if status not in (0, None):
                logger.info("a worker ended with status %s", status)
        self._workers.clear()
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for module in (self._presign, self._lifecycle, self._job_events, self._webhook_sender):
            if module is not None:
                unload_function(module)
        self._presign = self._lifecycle = self._job_events = self._webhook_sender = None
        if self._own_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._own_work_dir = False
        self.started = False

    # ------------------------------------------------------------------ functions

    def _invoke_api(self, event: dict[str, Any]) -> Any:
        assert self._presign is not None
        context = LocalLambdaContext(
            "presign", timeout_s=PRESIGN_TIMEOUT_S, memory_mb=PRESIGN_MEMORY_MB
        )
        with self._invoke_lock:
            return self._presign.handler(event, context)

    def sweep(self) -> Any:
        """Run the lifecycle function's scheduled sweep once."""
        assert self._lifecycle is not None
        context = LocalLambdaContext(
            "lifecycle", timeout_s=LIFECYCLE_TIMEOUT_S, memory_mb=LIFECYCLE_MEMORY_MB
        )
        with self._invoke_lock:
            return self._lifecycle.handler(schedule_event(), context)

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self.config.sweep_interval_s):
            try:
                self.sweep()
            except Exception:
                logger.exception("the scheduled sweep failed")

    # ------------------------------------------------------------------ event sources

    def _start_event_sources(self, settings: Settings) -> None:
        from mastering import clients
        from mastering.devstack.resources import jobs_stream_arn
        from mastering.notify.events import STREAM_FILTER_PATTERN

        queues = self.webhook_queues
        sqs = clients.sqs_client(settings.aws)

        def report_failure(record: dict[str, Any]) -> None:
            sqs.send_message(QueueUrl=queues.relay_failures.url, MessageBody=json.dumps(record))

        stream = StreamSource(
            streams=clients.dynamodb_streams_client(settings.aws),
            stream_arn=jobs_stream_arn(settings),
            invoke=self.invoke_job_events,
            pattern=STREAM_FILTER_PATTERN,
            on_failure=report_failure,
            function_arn=function_arn("job-events"),
        )
        queue = QueueSource(
            sqs=sqs,
            queue_url=queues.events.url,
            queue_arn=queues.events.arn,
            invoke=self.invoke_webhook_sender,
        )
        for name, source, idle_s in (
            ("job-events", stream, self.config.stream_poll_interval_s),
            # The receive itself waits for messages (long polling).
            ("webhook-sender", queue, 0.0),
        ):
            thread = threading.Thread(
                target=self._poll_loop, args=(name, source.poll, idle_s), name=name, daemon=True
            )
            thread.start()
            self._pollers.append(thread)

    def invoke_job_events(self, event: dict[str, Any]) -> Any:
        """The job-events function on a batch of stream records."""
        assert self._job_events is not None
        context = LocalLambdaContext(
            "job-events", timeout_s=JOB_EVENTS_TIMEOUT_S, memory_mb=JOB_EVENTS_MEMORY_MB
        )
        # Not under the invoke lock: each event source has one thread, and a slow
        # receiver must not hold up the API.
        return self._job_events.handler(event, context)

    def invoke_webhook_sender(self, event: dict[str, Any]) -> Any:
        """The webhook sender on a batch of queue messages."""
        assert self._webhook_sender is not None
        context = LocalLambdaContext(
            "webhook-sender", timeout_s=WEBHOOK_SENDER_TIMEOUT_S, memory_mb=WEBHOOK_SENDER_MEMORY_MB
        )
        return self._webhook_sender.handler(event, context)

    def _poll_loop(self, name: str, poll: Callable[[], int], idle_s: float) -> None:
        while not self._stopping.is_set():
            try:
                handled = poll()
            except Exception as error:
                if self._stopping.is_set():
                    return
                # The emulator restarting, say: keep trying until told to stop.
                logger.warning("%s: cannot read its event source (%s); retrying", name, error)
                self._stopping.wait(1.0)
                continue
            if not handled and idle_s:
                self._stopping.wait(idle_s)
