"""The Supabase edge function against a real `mastering serve`, end to end.

`supabase/functions/ai-mastering/integration_test.ts` plays Spectrum: it creates a job
through the edge function's handler, uploads both files with the presigned POSTs the
stack hands out, listens on 127.0.0.1 as the `ai-mastering-webhook` function, and waits
for the signed webhook to land in its job store as `succeeded` with result URLs. This
test starts the stack with that listener as its webhook URL and runs the Deno test with
the environment it needs, so `make test` covers the whole Spectrum ↔ backend path.

Deno comes from the `deno` npm package (`make test` runs `npm ci` first); without it
this test fails with how to get it, rather than passing silently.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.local.serve_process import API_KEY, free_port, running_serve

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "supabase" / "functions"
DENO = ROOT / "node_modules" / ".bin" / "deno"
# Guards against a hung run, not performance checks.
WEBHOOK_WAIT_S = 240
DENO_DEADLINE_S = 420


@pytest.mark.slow
def test_edge_function_receives_the_signed_webhook_from_a_real_stack(tmp_path: Path) -> None:
    if not DENO.exists():
        pytest.fail(f"{DENO.relative_to(ROOT)} is missing: run `npm ci` (make test does)")
    # Given a local stack that signs its webhooks with a fresh secret and sends them
    # to where the edge function's webhook route will listen
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    webhook_port = free_port()
    webhook_url = f"http://127.0.0.1:{webhook_port}/ai-mastering-webhook"
    with running_serve(tmp_path, "--webhook-url", webhook_url, "--webhook-secret", secret) as serve:
        # When the Deno integration test runs the edge function against it
        env = {
            **os.environ,
            "DENO_DIR": str(ROOT / ".deno-cache"),
            "NO_COLOR": "1",
            "MASTERING_INTEGRATION_API_URL": serve.api,
            "MASTERING_INTEGRATION_API_KEY": API_KEY,
            "MASTERING_INTEGRATION_WEBHOOK_SECRET": secret,
            "MASTERING_INTEGRATION_WEBHOOK_PORT": str(webhook_port),
            "MASTERING_INTEGRATION_TIMEOUT_S": str(WEBHOOK_WAIT_S),
        }
        result = subprocess.run(
            [
                str(DENO),
                "test",
                "--frozen",
                "--allow-env",
                "--allow-net=127.0.0.1",
                "--allow-read=.",
                "ai-mastering/integration_test.ts",
            ],
            cwd=FUNCTIONS,
            env=env,
            capture_output=True,
            text=True,
            timeout=DENO_DEADLINE_S,
            check=False,
        )
        report = f"deno:\n{result.stdout}\n{result.stderr}\nserve:\n{serve.output()}"

    # Then create -> upload -> webhook -> stored `succeeded` with result URLs all held
    # (integration_test.ts asserts each step), and the test really ran, not skipped
    assert result.returncode == 0, report
    assert "ok | 1 passed | 0 failed" in result.stdout, report
    assert "ignored" not in result.stdout, report
    # And the stack delivered the webhook on its first attempt
    assert "webhook delivered" in serve.output(), report
