"""The local stand-in for S3 invoking the master function.

One worker process is one Lambda sandbox: it long-polls the queue the emulator
sends the uploads bucket's notifications to, turns each message back into the S3
event S3 would have sent the function, invokes the master handler with a Lambda
context, and deletes the message. One event at a time, with a /tmp (``WORK_DIR``)
of its own: the handler clears stale work directories there on each run, which
would break a neighbour's job if sandboxes shared one.

As configured in template.yaml (``MaximumRetryAttempts: 0`` with an on-failure
destination), an event whose invocation fails is not retried: the lifecycle
function gets the failure record, and the message is deleted.

Run by the local stack as ``python -m mastering.devstack.s3_worker``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote_plus

from mastering.devstack import defaults
from mastering.devstack.handlers import (
    REGION,
    LocalLambdaContext,
    function_arn,
    load_function,
)
from mastering.devstack.processes import prepare_forked_children
from mastering.parent_death import die_with_parent

logger = logging.getLogger("mastering.devstack.worker")

# How long a received message stays hidden before this worker claims it for the
# whole invocation (see S3EventWorker._hold).
RECEIVE_VISIBILITY_S = 30
# Long-poll wait per receive. Shorter than SQS's 20 s maximum so a stop request
# is noticed within a second or two of an idle worker.
POLL_WAIT_S = 2
MASTER_MEMORY_MB = 3008
LIFECYCLE_TIMEOUT_S = 120
LIFECYCLE_MEMORY_MB = 256

Handler = Callable[[dict[str, Any], LocalLambdaContext], Any]

# Fields S3 puts in every record that the emulator leaves out.
_RECORD_DEFAULTS: dict[str, Any] = {
    "userIdentity": {"principalId": "AWS:LOCAL"},
    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
    "responseElements": {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"},
}


class NotAnS3Event(ValueError):
    pass


def s3_event_from_message(body: str) -> dict[str, Any] | None:
    """The S3 event the master function gets for one queue message; None for S3's
    ``s3:TestEvent`` (sent when the notification is configured)."""
    try:
        message = json.loads(body)
    except json.JSONDecodeError as error:
        raise NotAnS3Event(f"message body is not JSON: {error}") from error
    if not isinstance(message, dict):
        raise NotAnS3Event("message body is not a JSON object")
    if message.get("Event") == "s3:TestEvent":
        return None
    records = message.get("Records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise NotAnS3Event("message has no S3 event records")
    return {"Records": [_complete_record(record) for record in records]}


def _complete_record(record: dict[str, Any]) -> dict[str, Any]:
    completed = copy.deepcopy(record)
    for key, value in _RECORD_DEFAULTS.items():
        completed.setdefault(key, copy.deepcopy(value))
    s3 = completed.setdefault("s3", {})
    s3.setdefault("bucket", {}).setdefault("ownerIdentity", {"principalId": "LOCAL"})
    s3.setdefault("object", {}).setdefault("sequencer", f"{uuid.uuid4().int:018X}"[:18])
    return completed


def failure_record(s3_event: dict[str, Any], error_message: str, error_type: str) -> dict[str, Any]:
    """What Lambda sends the on-failure destination when an async invocation fails."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"{function_arn('master')}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": s3_event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {"errorMessage": error_message, "errorType": error_type},
    }


class S3EventWorker:
    """Poll ``queue_url`` and run the master handler on each S3 event, one at a time."""

    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        master: Handler,
        on_failure: Handler,
        master_timeout_s: float,
        in_flight: Path | None = None,
    ) -> None:
        self._sqs = sqs
        self._in_flight = in_flight
        self._queue_url = queue_url
        self._master = master
        self._on_failure = on_failure
        self._master_timeout_s = master_timeout_s
        self.stopping = threading.Event()
        self.busy = False

    def run(self, parent_pid: int | None = None) -> None:
        while not self.stopping.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                # The stack is gone (where the kernel cannot end us with it, e.g. macOS).
                logger.warning("the local stack has gone; stopping")
                return
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=POLL_WAIT_S,
                    VisibilityTimeout=RECEIVE_VISIBILITY_S,
                )
            except Exception as error:
                if self.stopping.is_set():
                    break
                # The emulator restarting or going away: keep trying until told to stop.
                logger.warning("cannot read the queue (%s); retrying", error)
                self.stopping.wait(1.0)
                continue
            for message in response.get("Messages", []):
                self.handle(message)

    def handle(self, message: dict[str, Any]) -> None:
        """Invoke the master for one message, then delete it whatever happened."""
        self.busy = True
        self._hold(message)
        try:
            event = s3_event_from_message(str(message.get("Body", "")))
        except NotAnS3Event as error:
            logger.warning("dropping a queue message that is not an S3 event: %s", error)
        else:
            if event is not None:
                self._invoke(event)
        finally:
            self.busy = False
        try:
            self._sqs.delete_message(
                QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        except Exception as error:
            # It reappears after the visibility timeout; the job's conditional
            # writes make a second delivery harmless.
            logger.warning("could not delete a handled message: %s", error)

    def _hold(self, message: dict[str, Any]) -> None:
        """Keep the message from other workers for as long as one invocation may run.

        Received with a short visibility timeout, so a message taken by a worker that
        died before it could handle it (killed during its long poll) comes back soon;
        lengthened here, once this worker really has it.
        """
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=min(int(self._master_timeout_s) + 60, 43_200),
            )
        except Exception as error:
            # Only the protection against a second delivery is lost, and the job's
            # conditional writes make that harmless.
            logger.warning("could not extend the message's visibility: %s", error)

    def _invoke(self, event: dict[str, Any]) -> None:
        keys = [unquote_plus(str(r["s3"]["object"].get("key", ""))) for r in event["Records"]]
        logger.info("invoking the master function for %s", ", ".join(keys))
        context = LocalLambdaContext(
            "master", timeout_s=self._master_timeout_s, memory_mb=MASTER_MEMORY_MB
        )
        if self._in_flight is not None:
            write_in_flight(self._in_flight, event)
        try:
            result = self._master(event, context)
        except Exception as error:
            logger.exception("the master function failed; calling its on-failure destination")
            self._destination(
                failure_record(event, str(error) or type(error).__name__, type(error).__name__)
            )
        else:
            logger.info("master function returned %s", json.dumps(result, default=str))
        finally:
            if self._in_flight is not None:
                self._in_flight.unlink(missing_ok=True)

    def _destination(self, record: dict[str, Any]) -> None:
        try:
            invoke_on_failure(self._on_failure, record)
        except Exception:
            logger.exception("the lifecycle function failed on the failure record")


def invoke_on_failure(lifecycle: Handler, record: dict[str, Any]) -> Any:
    context = LocalLambdaContext(
        "lifecycle", timeout_s=LIFECYCLE_TIMEOUT_S, memory_mb=LIFECYCLE_MEMORY_MB
    )
    return lifecycle(record, context)


def write_in_flight(path: Path, event: dict[str, Any]) -> None:
    """Leave the event being handled where the stack finds it if this process dies.

    Lambda hands the event of a sandbox that crashed (out of memory, killed) to the
    on-failure destination; the stack does the same from this file.
    """
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(event))
    os.replace(partial, path)


def read_in_flight(path: Path) -> dict[str, Any] | None:
    """The event a dead worker was handling, removing the record of it."""
    try:
        event = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    finally:
        path.unlink(missing_ok=True)
    return event if isinstance(event, dict) else None


def crash_message(status: int) -> str:
    """How Lambda reports a runtime that died, e.g. killed for running out of memory."""
    if status < 0:
        try:
            name = {signal.SIGKILL: "killed"}.get(signal.Signals(-status))
            name = name or signal.Signals(-status).name.lower().removeprefix("sig")
        except ValueError:
            name = str(-status)
        return f"Runtime exited with error: signal: {name}"
    return f"Runtime exited with error: exit status {status}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mastering.devstack.s3_worker",
        description="One local master-function sandbox (started by `mastering serve`).",
    )
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--functions-dir", required=True, type=Path)
    parser.add_argument("--name", default="worker")
    parser.add_argument(
        "--in-flight", type=Path, default=None, help="file naming the event being handled"
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="end when this process (the stack) ends"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s [{args.name}] %(levelname)s %(message)s",
    )
    # Each boto3 client announces where it found credentials and endpoints: not news.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # Powertools warns on every invocation that adds no metric; CloudWatch would
    # just file it, a terminal would fill up with it.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    stop_requested = threading.Event()
    worker: S3EventWorker | None = None

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()
        if worker is not None:
            worker.stopping.set()
            if worker.busy:
                # The job in progress runs in a forked child (run_isolated); ending it
                # lets the handler fail the job cleanly instead of leaving it processing.
                for child in multiprocessing.active_children():
                    child.terminate()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    prepare_forked_children()

    import boto3

    master = load_function(args.functions_dir, "master")
    lifecycle = load_function(args.functions_dir, "presign", "lifecycle")
    try:
        # A warm sandbox: the first job does not pay the engine's import.
        from mastering.pipeline import preload_engine

        preload_engine()
    except ImportError as error:
        logger.error(
            "the mastering engine is not installed (%s); jobs will fail. "
            "Install it with: pip install -e '.[engine]'",
            error,
        )
    worker = S3EventWorker(
        sqs=boto3.client("sqs", region_name=os.environ.get("AWS_REGION", REGION)),
        queue_url=args.queue_url,
        master=master.handler,
        on_failure=lifecycle.handler,
        master_timeout_s=float(os.environ.get("MASTER_TIMEOUT_S") or defaults.MASTER_TIMEOUT_S),
        in_flight=args.in_flight,
    )
    if stop_requested.is_set():
        return 0
    logger.info("ready (WORK_DIR=%s)", os.environ.get("WORK_DIR", "/tmp"))
    worker.run(parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
