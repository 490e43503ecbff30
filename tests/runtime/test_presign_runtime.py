"""The presign and lifecycle functions under the Lambda runtime emulator, fed events/."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import boto3
import pytest

from tests.conftest import ApiClient, Stack, load_event
from tests.runtime.conftest import RUNTIME_API_KEY, RuntimeFactory
from tests.runtime.rie import Runtime, snapshot

pytestmark = pytest.mark.slow

OWNER = "user-1234"  # the x-owner-id of the files in events/


def api_event(
    name: str,
    *,
    job_id: str | None = None,
    owner: str | None = None,
    api_key: str | None = None,
    drop_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An events/ file, with the job id and the caller's headers rewritten."""
    event = copy.deepcopy(load_event(name))
    headers = event["headers"]
    if job_id is not None:
        path = f"/jobs/{job_id}"
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["pathParameters"] = {"job_id": job_id}
    if owner is not None:
        headers["x-owner-id"] = owner
    if api_key is not None:
        headers["x-api-key"] = api_key
    for header in drop_headers:
        headers.pop(header, None)
    return event


def http(runtime: Runtime, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Invoke with an API Gateway event; return its status code and decoded JSON body."""
    payload, _ = runtime.invoke(event)
    assert "statusCode" in payload, f"not an HTTP response: {payload}\n{runtime.log_tail()}"
    return payload["statusCode"], json.loads(payload["body"])


def jobs_table(stack: Stack) -> Any:
    dynamodb = boto3.resource("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1")
    return dynamodb.Table(os.environ["JOBS_TABLE"])


def stored_job(stack: Stack, job_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        jobs_table(stack).get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
    )
    return item


@pytest.fixture
def presign(lambda_runtime: RuntimeFactory) -> Runtime:
    return lambda_runtime("presign", "app.handler", timeout_s=15, memory_mb=512)


@pytest.fixture
def lifecycle(lambda_runtime: RuntimeFactory) -> Runtime:
    return lambda_runtime("presign", "lifecycle.handler", timeout_s=120, memory_mb=256)


def test_health_and_presets_answer_under_the_runtime(presign: Runtime) -> None:
    # Given the presign function in a Lambda sandbox
    code_before = snapshot(presign.task_root)

    # When /health is called without any key
    status, health = http(presign, api_event("api-get-health.json", drop_headers=("x-api-key",)))

    # Then it answers, open to anyone
    assert status == 200
    assert health["status"] == "ok"
    assert health["service"] == "spectrum-mastering"
    assert health["version"]
    assert health["engine"]

    # When the presets are listed with the key from events/
    status, presets = http(presign, api_event("api-get-presets.json"))

    # Then the catalogue comes back, and a wrong key is refused
    assert status == 200
    ids = [preset["id"] for preset in presets["presets"]]
    assert "balanced" in ids
    assert all(
        set(preset) == {"id", "name", "description", "loudness_lufs", "true_peak_dbtp"}
        for preset in presets["presets"]
    )
    assert {"id": "spotify", "name": "Spotify", "loudness_lufs": -14.0} in presets[
        "loudness_targets"
    ]
    status, refused = http(presign, api_event("api-get-presets.json", api_key="wrong-key"))
    assert status == 401
    assert refused["error"]["code"] == "unauthorized"

    # And the function wrote nothing next to its code (Lambda's /var/task is read-only)
    assert snapshot(presign.task_root) == code_before


def test_job_is_created_and_read_back_under_the_runtime(presign: Runtime, stack: Stack) -> None:
    # Given the POST /jobs event of events/ (target + reference, wav16 + wav24)
    post = api_event("api-post-jobs.json")
    assert post["headers"]["x-api-key"] == RUNTIME_API_KEY

    # When it goes through the runtime
    status, created = http(presign, post)

    # Then the job exists, waiting for two presigned uploads to the emulated S3
    assert status == 201, created
    job_id = created["job_id"]
    assert created["status"] == "awaiting_upload"
    assert set(created["uploads"]) == {"target", "reference"}
    for role, upload in created["uploads"].items():
        assert upload["url"].startswith(stack.endpoint)
        assert upload["fields"]["key"] == f"uploads/{job_id}/{role}"
        assert upload["expires_at"]
    assert created["uploads"]["target"]["fields"]["Content-Type"] == "audio/wav"

    # And the record is in DynamoDB, owned by the caller
    item = stored_job(stack, job_id)
    assert item is not None
    assert item["status"] == "awaiting_upload"
    assert item["owner"] == OWNER

    # When the same caller reads it with the GET event of events/
    status, job = http(presign, api_event("api-get-job.json", job_id=job_id, owner=OWNER))

    # Then the public job body comes back
    assert status == 200, job
    assert job["job_id"] == job_id
    assert job["status"] == "awaiting_upload"
    assert job["progress"] == {"stage": "awaiting_upload", "percent": 0}
    assert job["error"] is None
    assert job["results"] == {}
    assert job["metadata"] == {"track_id": "trk_42"}
    assert job["created_at"]
    assert job["updated_at"]

    # And another caller, or a wrong key, gets nothing
    status, other = http(presign, api_event("api-get-job.json", job_id=job_id, owner="user-999"))
    assert status == 404
    assert other["error"]["code"] == "not_found"
    status, refused = http(
        presign, api_event("api-get-job.json", job_id=job_id, owner=OWNER, api_key="nope")
    )
    assert status == 401
    assert refused["error"]["code"] == "unauthorized"


def test_scheduled_sweep_expires_only_overdue_uploads(
    lifecycle: Runtime, stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one job whose upload window has already closed and one still open
    window = stack.settings.upload_window_s
    stack.configure(upload_window_s=0)
    overdue = api.call("POST", "/jobs", body={"target": _declared(), "preset": "balanced"})
    stack.configure(upload_window_s=window)
    waiting = api.call("POST", "/jobs", body={"target": _declared(), "preset": "balanced"})
    assert overdue.status == waiting.status == 201

    # When EventBridge's scheduled event reaches the lifecycle function
    result, _ = lifecycle.invoke(load_event("lifecycle-schedule.json"))

    # Then only the overdue job expired, for a reason the client can act on
    assert result == {"expired": [overdue.body["job_id"]], "failed": []}, lifecycle.log_tail()
    expired = stored_job(stack, overdue.body["job_id"])
    assert expired is not None
    assert expired["status"] == "expired"
    assert expired["error"]["code"] == "upload_expired"
    still_waiting = stored_job(stack, waiting.body["job_id"])
    assert still_waiting is not None
    assert still_waiting["status"] == "awaiting_upload"


def test_master_failure_record_fails_the_job_it_carries(
    lifecycle: Runtime, stack: Stack, api: ApiClient
) -> None:
    # Given a job whose uploads both landed, so it is queued for the master function
    from mastering.worker.runner import UploadNotice, WorkerPorts, accept_upload

    created = api.call("POST", "/jobs", body={"target": _declared(), "reference": _declared()})
    assert created.status == 201
    job_id = created.body["job_id"]
    settings = stack.settings
    ports = WorkerPorts(settings=settings, store=stack.store(), storage=stack.storage())
    for role in ("target", "reference"):
        queued = accept_upload(
            UploadNotice(settings.uploads_bucket, f"uploads/{job_id}/{role}"), ports=ports
        )
    assert queued is not None
    assert str(queued.status) == "queued"

    # When Lambda's on-failure destination reports that the master timed out on it
    event = copy.deepcopy(load_event("lifecycle-master-failure.json"))
    record = event["requestPayload"]["Records"][0]
    record["s3"]["bucket"]["name"] = settings.uploads_bucket
    record["s3"]["object"]["key"] = f"uploads/{job_id}/reference"
    result, _ = lifecycle.invoke(event)

    # Then the job is failed as a processing timeout, not left queued forever
    assert result == {"failed": [job_id]}, lifecycle.log_tail()
    failed = stored_job(stack, job_id)
    assert failed is not None
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "processing_timeout"

    # And the owner sees it that way too
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "failed"
    assert job["error"]["code"] == "processing_timeout"

    # When the same record is delivered again
    again, _ = lifecycle.invoke(event)

    # Then nothing changes: the job already ended
    assert again == {"failed": []}


def _declared() -> dict[str, Any]:
    return {"filename": "song.wav", "size": 1_000_000, "content_type": "audio/wav"}
