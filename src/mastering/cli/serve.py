"""``mastering serve``: the local stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from mastering.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    HelpFormatter,
    env_default,
    port_number,
    positive_int,
)
from mastering.devstack import defaults

EXAMPLES = """\
examples:
  mastering serve
  mastering serve --api-port 8080 --s3-port 9000 --workers 2
  MASTERING_API_KEY=secret mastering serve --allowed-origins http://localhost:5173
"""

_HINTS = {
    "HTTP API": f"pick another with --api-port or {defaults.ENV_API_PORT}",
    "S3 emulator": f"pick another with --s3-port or {defaults.ENV_S3_PORT}",
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the whole service locally (S3/DynamoDB/SQS emulator, HTTP API, workers)",
        description=(
            "Run the service on this machine with the same handlers as in AWS: a moto "
            "server as S3, DynamoDB and SQS; the HTTP API; and workers that master "
            "each upload. Presigned URLs point at the local S3, so curl or a browser can "
            "run the whole flow. Ctrl-C stops everything; all data is in memory."
        ),
        epilog=f"{EXAMPLES}\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--host", default=defaults.LOCAL_HOST, help="address to listen on")
    parser.add_argument(
        "--api-port",
        type=port_number,
        default=env_default(defaults.ENV_API_PORT, defaults.API_PORT),
        help=f"port of the HTTP API (env {defaults.ENV_API_PORT})",
    )
    parser.add_argument(
        "--s3-port",
        type=port_number,
        default=env_default(defaults.ENV_S3_PORT, defaults.S3_PORT),
        help=f"port of the S3/DynamoDB/SQS emulator (env {defaults.ENV_S3_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the X-Api-Key clients must send (default: ${defaults.ENV_API_KEY}, "
        f"else {defaults.API_KEY})",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="jobs mastered at the same time"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the workers keep their temporary files (default: a temporary "
        "directory, removed on exit)",
    )
    parser.add_argument(
        "--allowed-origins",
        nargs="*",
        metavar="ORIGIN",
        default=env_default(defaults.ENV_ALLOWED_ORIGINS, ",".join(defaults.ALLOWED_ORIGINS)),
        help="browser origins allowed by CORS, space- or comma-separated; none to turn "
        f"CORS off (env {defaults.ENV_ALLOWED_ORIGINS})",
    )
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="POST signed job.succeeded/failed/expired/cancelled webhooks here, e.g. the edge "
        "function served by `supabase functions serve` (default: $WEBHOOK_URL, else none)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=None,
        help="the Standard Webhooks secret to sign them with (default: $WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--webhook-retry-scale",
        type=retry_scale,
        default=env_default("WEBHOOK_RETRY_SCALE", 1.0),
        metavar="FACTOR",
        help="multiply the delays between webhook attempts (5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h) by this, 0 to 1; e.g. 0.01 to watch retries and the dead-letter queue "
        "in minutes (env WEBHOOK_RETRY_SCALE)",
    )
    parser.set_defaults(run=run)


def retry_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0 and 1, not {value}")
    return value


def parse_origins(raw: str | list[str]) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    origins: list[str] = []
    for item in items:
        for origin in item.split(","):
            origin = origin.strip().rstrip("/")
            if not origin:
                continue
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https") or not parts.netloc or parts.path
            ):
                raise CliError(
                    f"not an origin: {origin!r} (expected scheme://host[:port], e.g. "
                    "http://localhost:5173, or *)",
                    EXIT_USAGE,
                )
            origins.append(origin)
    return tuple(dict.fromkeys(origins))


def _banner(stack: Any, api_key: str, workers: int) -> str:
    config = stack.config
    names = config.names
    origins = ", ".join(stack.allowed_origins)
    api = stack.api_url
    return f"""\
Spectrum mastering: local stack is running
  web page    {api}/
  HTTP API    {api}   (header X-Api-Key: {api_key})
  S3 and co.  {stack.s3_url}   (moto: S3, DynamoDB, SQS; data lives in memory)
  buckets     {names.uploads_bucket}, {names.results_bucket}
  jobs table  {names.jobs_table}
  workers     {workers}, temporary files under {stack.work_dir}
  CORS        {origins}
  webhooks    {_webhooks(stack)}

Try it:
  curl {api}/health
  mastering submit song.wav --preset balanced --api {api} --api-key {api_key}
  mastering submit song.wav --reference ref.wav --format wav24 --format mp3 \\
      --api {api} --api-key {api_key}

Ctrl-C stops it.
"""


def _webhooks(stack: Any) -> str:
    config = stack.config
    if not config.webhook_url:
        return "off"
    scale = (
        "" if config.webhook_retry_scale == 1 else f", retry delays x{config.webhook_retry_scale}"
    )
    dead = stack.webhook_queues.dead_letters.url
    return f"{config.webhook_url}{scale}\n              dead letters: {dead}"


def run(args: argparse.Namespace) -> int:
    from mastering.devstack.stack import LocalStack, PortInUse, StackConfig, StackError

    origins = parse_origins(args.allowed_origins)
    api_key = args.api_key or env_default(defaults.ENV_API_KEY, defaults.API_KEY)
    webhook_url = args.webhook_url or os.environ.get("WEBHOOK_URL", "").strip() or None
    webhook_secret = args.webhook_secret or os.environ.get("WEBHOOK_SECRET", "").strip() or None
    if not api_key.strip():
        raise CliError("the API key must not be empty", EXIT_USAGE)
    if webhook_url and not webhook_secret:
        raise CliError("--webhook-url needs --webhook-secret (or WEBHOOK_SECRET)", EXIT_USAGE)
    # Before anything starts or a signal handler is replaced: a bad setting ends here.
    master_timeout_s = _master_timeout()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    # Each boto3 client announces where it found credentials; not news here.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.warning(
            "listening on %s: the emulator has no authentication, so anyone who can reach "
            "this address can read and change its data",
            args.host,
        )

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(
        StackConfig(
            host=args.host,
            api_port=args.api_port,
            s3_port=args.s3_port,
            api_key=api_key,
            workers=args.workers,
            work_dir=args.work_dir,
            allowed_origins=origins,
            master_timeout_s=master_timeout_s,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_retry_scale=args.webhook_retry_scale,
        )
    )
    try:
        try:
            stack.start()
        except PortInUse as error:
            raise CliError(f"{error}; {_HINTS.get(error.what, 'pick another')}") from None
        except StackError as error:
            raise CliError(str(error)) from None
        if not stop.is_set():
            print(_banner(stack, api_key, args.workers), flush=True)
        # Woken by the signal handler; the timeout is the workers' health check.
        while not stop.wait(1.0):
            stack.supervise()
        logging.info("stopping")
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logging.info("stopped")
    return EXIT_OK


def _master_timeout() -> int:
    raw = env_default("MASTER_TIMEOUT_S", defaults.MASTER_TIMEOUT_S)
    try:
        value = int(raw)
    except ValueError:
        raise CliError(
            f"MASTER_TIMEOUT_S must be a whole number of seconds, not {raw!r}", EXIT_USAGE
        ) from None
    if value < 10:
        raise CliError("MASTER_TIMEOUT_S must be at least 10 seconds", EXIT_USAGE)
    return value
