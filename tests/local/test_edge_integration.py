"""The Supabase edge function against a real `mastering serve`, end to end.

`supabase/functions/ai-mastering/integration_test.ts` plays Spectrum's signed-in users:
through the edge function's handler it creates a job with options and previews,
uploads both files with the presigned POSTs the stack hands out, lists, cancels,
expires, hits the live-job limit and deletes jobs, while listening on 127.0.0.1 as the
`ai-mastering-webhook` function for the signed `job.succeeded`, `job.cancelled` and
`job.expired` webhooks the stack sends, and checks what lands in its job store. This
test starts the stack with that listener as its webhook URL and runs the Deno test with
the environment it needs, so `make test` covers the whole Spectrum ↔ backend path.

An hour cannot pass in a test, so for the expiry this test stands in for the clock: it
serves `POST <url>/<job_id>`, which moves that job's upload deadline into the past in
the emulator's jobs table (the emulator and table are the ones `mastering serve`
prints). Everything else, the expiry itself included, is the stack's own doing.

The edge function's client is also held against the API's committed OpenAPI document
(`openapi_contract_test.ts`, which needs to read docs/).

Deno comes from the `deno` npm package (`make test` runs `npm ci` first); without it
these tests fail with how to get it, rather than passing silently.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from mastering.devstack.handlers import REGION
from tests.local.serve_process import API_KEY, Serve, free_port, running_serve

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "supabase" / "functions"
DENO = ROOT / "node_modules" / ".bin" / "deno"
# Guards against a hung run, not performance checks.
WEBHOOK_WAIT_S = 240
DENO_DEADLINE_S = 420
BANNER_WAIT_S = 30.0
# The stack's default per-user limit of live jobs (MAX_LIVE_JOBS_PER_OWNER).
LIVE_JOB_LIMIT = 10


def _deno(*args: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    if not DENO.exists():
        pytest.fail(f"{DENO.relative_to(ROOT)} is missing: run `npm ci` (make test does)")
    return subprocess.run(
        [str(DENO), "test", "--frozen", *args],
        cwd=FUNCTIONS,
        env={**os.environ, "DENO_DIR": str(ROOT / ".deno-cache"), "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _emulator(serve: Serve) -> tuple[str, str]:
    """The emulator's URL and the jobs table's name, from the banner serve prints."""
    deadline = time.monotonic() + BANNER_WAIT_S
    while True:
        text = serve.output()
        endpoint = re.search(r"^\s*S3 and co\.\s+(\S+)", text, re.MULTILINE)
        table = re.search(r"^\s*jobs table\s+(\S+)", text, re.MULTILINE)
        if endpoint and table:
            return endpoint[1], table[1]
        if time.monotonic() > deadline:
            pytest.fail(f"serve printed no emulator URL or jobs table:\n{text}")
        time.sleep(0.1)


@contextlib.contextmanager
def upload_window_closer(endpoint: str, table: str) -> Iterator[str]:
    """Serve `POST <url>/<job_id>`: that job's upload window ends now.

    Only a job still waiting for its uploads is touched (409 otherwise); its status is
    left alone, so the expiry is the stack's, on the next read or sweep.
    """
    dynamodb: Any = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # the emulator takes any key
    )

    class CloseWindow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            job_id = self.path.rstrip("/").rsplit("/", 1)[-1]
            try:
                dynamodb.update_item(
                    TableName=table,
                    Key={"job_id": {"S": job_id}},
                    UpdateExpression="SET deadline_at = :past",
                    ConditionExpression="#status = :waiting",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":past": {"N": str(int(time.time()) - 1)},
                        ":waiting": {"S": "awaiting_upload"},
                    },
                )
                status = 204
            except dynamodb.exceptions.ConditionalCheckFailedException:
                status = 409
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the Deno test reports what matters

    server = ThreadingHTTPServer(("127.0.0.1", 0), CloseWindow)
    thread = threading.Thread(target=server.serve_forever, name="upload-window", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/upload-window"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_edge_function_manages_jobs_and_stores_webhooks_from_a_real_stack(
    tmp_path: Path,
) -> None:
    # Given a local stack that signs its webhooks with a fresh secret and sends them
    # to where the edge function's webhook route will listen
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    webhook_port = free_port()
    webhook_url = f"http://127.0.0.1:{webhook_port}/ai-mastering-webhook"
    with (
        running_serve(tmp_path, "--webhook-url", webhook_url, "--webhook-secret", secret) as serve,
        upload_window_closer(*_emulator(serve)) as expire_url,
    ):
        # When the Deno integration test runs the edge function against it
        result = _deno(
            "--allow-env",
            "--allow-net=127.0.0.1",
            "--allow-read=.",
            "ai-mastering/integration_test.ts",
            env={
                "MASTERING_INTEGRATION_API_URL": serve.api,
                "MASTERING_INTEGRATION_API_KEY": API_KEY,
                "MASTERING_INTEGRATION_WEBHOOK_SECRET": secret,
                "MASTERING_INTEGRATION_WEBHOOK_PORT": str(webhook_port),
                "MASTERING_INTEGRATION_TIMEOUT_S": str(WEBHOOK_WAIT_S),
                "MASTERING_INTEGRATION_LIVE_JOB_LIMIT": str(LIVE_JOB_LIMIT),
                "MASTERING_INTEGRATION_EXPIRE_URL": expire_url,
            },
            timeout_s=DENO_DEADLINE_S,
        )
        report = f"deno:\n{result.stdout}\n{result.stderr}\nserve:\n{serve.output()}"

    # Then create -> upload -> webhook, list, cancel, expire, the limit and delete all
    # held (integration_test.ts asserts each step), and every step really ran
    assert result.returncode == 0, report
    assert re.search(r"ok \| 1 passed \(\d+ steps\) \| 0 failed", result.stdout), report
    assert "ignored" not in result.stdout, report
    # And the stack delivered its webhooks
    assert "webhook delivered" in serve.output(), report


def test_edge_client_matches_the_openapi_document() -> None:
    # Given the API's committed OpenAPI document (kept current by test_api_schema.py)
    # When the edge function's contract test reads it
    result = _deno(
        "--allow-read=.,../../docs",
        "ai-mastering/openapi_contract_test.ts",
        env={},
        timeout_s=120,
    )
    report = f"{result.stdout}\n{result.stderr}"
    # Then the client's calls, statuses, modes and create checks agree with it, and
    # the test ran rather than being ignored for want of permission
    assert result.returncode == 0, report
    assert re.search(r"ok \| \d+ passed \| 0 failed", result.stdout), report
    assert "ignored" not in result.stdout, report
