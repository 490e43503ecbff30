"""Listing, cancelling and deleting jobs, the per-owner limit, and what the API refuses
because the job store could not keep it (DESIGN.md "Job list, cancel, delete")."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mastering.jobs.model import JobStatus
from mastering.jobs.rules import OVERDUE_GRACE_S, UPLOAD_EVENT_MAX_AGE_S
from tests.audio_factory import tone_mix, write_wav
from tests.conftest import ApiClient, FakeLambdaContext, Stack, load_event, load_handler
from tests.jobflow import create_and_upload, deliver

WAV = {"filename": "song.wav", "size": 1_000_000, "content_type": "audio/wav"}
RATE = 44_100


def _create(api: ApiClient, owner: str = "user-1", **extra: Any) -> str:
    response = api.call(
        "POST", "/jobs", body={"target": WAV, "preset": "warm", **extra}, owner=owner
    )
    assert response.status == 201, response.body
    return str(response.body["job_id"])


def _set_deadline(stack: Stack, job_id: str, deadline: int) -> None:
    """Move a job's upload deadline, as if it had been created that long ago."""
    table = stack.store()._table
    table.update_item(
        Key={"job_id": job_id},
        UpdateExpression="SET deadline_at = :deadline",
        ExpressionAttributeValues={":deadline": deadline},
    )


# ---------------------------------------------------------------- list


def test_an_owner_pages_through_their_jobs_newest_first(api: ApiClient, stack: Stack) -> None:
    # Given five jobs of user-1 and one of user-2
    stack.configure(max_live_jobs_per_owner=0)
    mine = [_create(api, metadata={"n": n}) for n in range(5)]
    _create(api, owner="user-2")
    # When user-1 lists them two at a time
    seen: list[dict[str, Any]] = []
    path = "/jobs?limit=2"
    pages = 0
    while True:
        response = api.call("GET", path)
        assert response.status == 200, response.body
        pages += 1
        seen += response.body["jobs"]
        cursor = response.body["next_cursor"]
        if cursor is None:
            break
        path = f"/jobs?limit=2&cursor={cursor}"
    # Then they see exactly their five, newest first, in three pages, in summary form
    assert [job["job_id"] for job in seen] == list(reversed(mine))
    assert pages == 3
    assert [job["metadata"]["n"] for job in seen] == [4, 3, 2, 1, 0]
    assert set(seen[0]) == {"job_id", "status", "created_at", "updated_at", "metadata", "error"}


def test_a_listing_can_be_filtered_by_status(api: ApiClient) -> None:
    # Given two jobs, one of them cancelled
    kept, cancelled = _create(api), _create(api)
    assert api.call("POST", f"/jobs/{cancelled}/cancel").status == 200
    # When the listing asks for cancelled jobs, then for waiting ones
    only_cancelled = api.call("GET", "/jobs?status=cancelled").body["jobs"]
    only_waiting = api.call("GET", "/jobs?status=awaiting_upload").body["jobs"]
    # Then each holds just the matching job
    assert [job["job_id"] for job in only_cancelled] == [cancelled]
    assert [job["job_id"] for job in only_waiting] == [kept]


@pytest.mark.parametrize(
    ("path", "owner", "fragment"),
    [
        ("/jobs", None, "X-Owner-Id"),
        ("/jobs", "", "X-Owner-Id"),
        ("/jobs?limit=0", "user-1", "limit"),
        ("/jobs?limit=101", "user-1", "limit"),
        ("/jobs?limit=ten", "user-1", "limit"),
        ("/jobs?status=done", "user-1", "status"),
        ("/jobs?cursor=not-a-cursor", "user-1", "cursor"),
        ("/jobs?cursor=eyJqIjoieCIsImMiOiJ5In0", "user-1", "cursor"),
    ],
)
def test_a_bad_listing_request_is_refused_naming_the_problem(
    api: ApiClient, path: str, owner: str | None, fragment: str
) -> None:
    # When the listing is asked wrongly (no owner, limit out of 1..100, bad cursor)
    response = api.call("GET", path, owner=owner)
    # Then it is a 400 that names the parameter
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_request"
    assert fragment in response.body["error"]["message"]


def test_a_cursor_cannot_reach_another_owners_jobs(api: ApiClient, stack: Stack) -> None:
    # Given user-2 with three jobs and a cursor from their first page
    stack.configure(max_live_jobs_per_owner=0)
    for _ in range(3):
        _create(api, owner="user-2")
    cursor = api.call("GET", "/jobs?limit=1", owner="user-2").body["next_cursor"]
    assert cursor
    # When user-1 replays that cursor
    response = api.call("GET", f"/jobs?limit=10&cursor={cursor}", owner="user-1")
    # Then user-1 sees only their own (none)
    assert response.status == 200
    assert response.body["jobs"] == []


# ---------------------------------------------------------------- cancel


def test_a_waiting_job_is_cancelled_once_then_reports_it_finished(api: ApiClient) -> None:
    # Given a job waiting for its upload
    job_id = _create(api)
    # When its owner cancels it
    response = api.call("POST", f"/jobs/{job_id}/cancel")
    # Then the answer is the job, cancelled
    assert response.status == 200
    assert response.body["status"] == "cancelled"
    assert response.body["progress"]["stage"] == "cancelled"
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "cancelled"
    # And a second cancel is a 409 job_finished; another owner gets a 404
    again = api.call("POST", f"/jobs/{job_id}/cancel")
    assert again.status == 409
    assert again.body["error"]["code"] == "job_finished"
    assert api.call("POST", f"/jobs/{job_id}/cancel", owner="user-2").status == 404


def test_an_upload_arriving_after_a_cancel_starts_nothing(
    api: ApiClient, stack: Stack, tmp_path: Path, invoke_master: Callable[..., Any]
) -> None:
    # Given a job cancelled after its target was uploaded, before the S3 event arrived
    target = write_wav(tmp_path / "t.wav", tone_mix(3.0, RATE), RATE)
    job_id, sizes = create_and_upload(api, target, None, preset="warm")
    assert api.call("POST", f"/jobs/{job_id}/cancel").status == 200
    # When the event arrives
    deliver(invoke_master, job_id, "target", sizes["target"])
    # Then the job stays cancelled, and nothing was mastered
    job = stack.store().get(job_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    assert job.results == {}
    assert stack.leftovers() == []


# ---------------------------------------------------------------- delete


def test_delete_removes_uploads_results_and_the_job(
    api: ApiClient, stack: Stack, tmp_path: Path, invoke_master: Callable[..., Any]
) -> None:
    # Given a mastered job (its results in S3) whose target upload is still there
    target = write_wav(tmp_path / "t.wav", tone_mix(3.0, RATE), RATE)
    job_id, sizes = create_and_upload(api, target, None, preset="warm", outputs=["wav16", "mp3"])
    deliver(invoke_master, job_id, "target", sizes["target"])
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "succeeded"
    storage, settings = stack.storage(), stack.settings
    stack.storage().write_bytes(
        settings.uploads_bucket, f"uploads/{job_id}/target", b"still here", content_type="x/y"
    )
    # When another owner tries, then the owner deletes it
    assert api.call("DELETE", f"/jobs/{job_id}", owner="user-2").status == 404
    response = api.call("DELETE", f"/jobs/{job_id}")
    # Then it answers 204, the job reads as missing, and no file of it is left
    assert response.status == 204
    assert api.call("GET", f"/jobs/{job_id}").status == 404
    assert api.call("DELETE", f"/jobs/{job_id}").status == 404
    for bucket, prefix in (
        (settings.uploads_bucket, f"uploads/{job_id}/"),
        (settings.results_bucket, f"results/{job_id}/"),
    ):
        assert storage.delete_prefix(bucket, prefix) == 0, prefix


def test_deleting_a_live_job_cancels_it_first(api: ApiClient, stack: Stack) -> None:
    # Given a waiting job
    job_id = _create(api)
    # When it is deleted
    assert api.call("DELETE", f"/jobs/{job_id}").status == 204
    # Then it is gone
    assert stack.store().get(job_id) is None


# ---------------------------------------------------------------- per-owner limit


def test_an_owner_cannot_have_more_live_jobs_than_the_limit(api: ApiClient, stack: Stack) -> None:
    # Given a limit of two live jobs per owner, and user-1 with two
    stack.configure(max_live_jobs_per_owner=2)
    first = _create(api)
    _create(api)
    # When user-1 asks for a third
    refused = api.call("POST", "/jobs", body={"target": WAV, "preset": "warm"})
    # Then it is a 429 too_many_jobs that says the limit
    assert refused.status == 429
    assert refused.body["error"]["code"] == "too_many_jobs"
    assert "2" in refused.body["error"]["message"]
    # And another owner is not affected, and a cancel frees a place
    assert (
        api.call("POST", "/jobs", body={"target": WAV, "preset": "warm"}, owner="user-2").status
        == 201
    )
    assert api.call("POST", f"/jobs/{first}/cancel").status == 200
    assert api.call("POST", "/jobs", body={"target": WAV, "preset": "warm"}).status == 201


# ---------------------------------------------------------------- what DynamoDB cannot store


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ('{"x": NaN}', "metadata.x"),
        ('{"x": Infinity}', "metadata.x"),
        ('{"x": -Infinity}', "metadata.x"),
        ('{"x": 1e300}', "metadata.x"),
        ('{"x": 1e-200}', "metadata.x"),
        ('{"x": [1, 2, 100000000000000000000000000000000000000000000000000]}', "metadata.x.2"),
        ('{"x": 123456789012345678901234567890123456789}', "metadata.x"),
        ('{"": 1}', "metadata"),
        ("{" + '"a": {' * 16 + '"b": 1' + "}" * 17, "nested deeper than 16"),
    ],
)
def test_metadata_the_job_store_cannot_keep_is_a_400(
    api: ApiClient, metadata: str, fragment: str
) -> None:
    # When a job's metadata holds a number DynamoDB cannot store, or nests too deep
    raw = '{"target": ' + json.dumps(WAV) + ', "preset": "warm", "metadata": ' + metadata + "}"
    response = api.call("POST", "/jobs", raw_body=raw)
    # Then the request is refused naming the field, not a 500
    assert response.status == 400, response.body
    assert response.body["error"]["code"] == "invalid_request"
    assert fragment in response.body["error"]["message"]


def test_metadata_within_the_limits_is_kept_exactly(api: ApiClient) -> None:
    # Given metadata 16 levels deep (itself included) with numbers at the edges of
    # what is storable
    nested: dict[str, Any] = {"leaf": True}
    for level in range(14):
        nested = {f"l{level}": nested}
    metadata = {
        "deep": nested,
        "big": 9.99e125,
        "small": 1e-130,
        "digits": 12345678901234567890123456789012345678,
        "zero": 0.0,
        "none": None,
        "text": "",
    }
    # When a job is created with it
    job_id = _create(api, metadata=metadata)
    # Then it reads back the same
    echoed = api.call("GET", f"/jobs/{job_id}").body["metadata"]
    assert echoed["deep"] == nested
    assert echoed["digits"] == metadata["digits"]
    assert math.isclose(echoed["big"], 9.99e125)
    assert math.isclose(echoed["small"], 1e-130)
    assert echoed["none"] is None
    assert echoed["text"] == ""


@pytest.mark.parametrize("depth", [900, 5000, 100_000])
def test_a_body_nested_thousands_deep_is_a_400(api: ApiClient, depth: int) -> None:
    for raw in ("[" * depth + "]" * depth, '{"target": ' + "[" * depth + "]" * depth + "}"):
        response = api.call("POST", "/jobs", raw_body=raw)
        assert response.status == 400, response.body
        assert response.body["error"]["code"] == "invalid_request"


def test_a_body_is_read_as_json_whatever_type_it_claims(api: ApiClient) -> None:
    # Given what `curl -d` sends: JSON labelled as a form, and a multipart type
    # without a boundary around plain text
    form = {"content-type": "application/x-www-form-urlencoded"}
    json_body = json.dumps({"target": WAV, "preset": "warm"})
    # When each is posted
    as_form = api.call("POST", "/jobs", raw_body=json_body, headers=form)
    not_json = api.call(
        "POST",
        "/jobs",
        raw_body="target=song.wav",
        headers={"content-type": "multipart/form-data"},
    )
    # Then the JSON is taken, and the rest is a 400 saying the body is not JSON
    assert as_form.status == 201
    assert not_json.status == 400
    assert not_json.body["error"]["message"] == "The request body is not valid JSON"


# ---------------------------------------------------------------- expiry while an event waits


def _sweep() -> dict[str, Any]:
    lifecycle = load_handler("presign", "lifecycle")
    result: dict[str, Any] = lifecycle.handler(
        load_event("lifecycle-schedule.json"), FakeLambdaContext(60, "lifecycle")
    )
    return result


def test_a_job_whose_files_arrived_waits_for_its_event_instead_of_expiring(
    api: ApiClient, stack: Stack, tmp_path: Path, invoke_master: Callable[..., Any]
) -> None:
    # Given a job whose target is in S3 but whose S3 event is held up (throttling)
    # past the upload window
    target = write_wav(tmp_path / "t.wav", tone_mix(3.0, RATE), RATE)
    job_id, sizes = create_and_upload(api, target, None, preset="warm")
    _set_deadline(stack, job_id, int(time.time()) - 60)
    # When the sweep runs and the client reads the job
    report = _sweep()
    status = api.call("GET", f"/jobs/{job_id}").body["status"]
    # Then it still waits, and the late event masters it
    assert job_id not in report["expired"]
    assert status == "awaiting_upload"
    deliver(invoke_master, job_id, "target", sizes["target"])
    assert api.call("GET", f"/jobs/{job_id}").body["status"] == "succeeded"


def test_a_job_without_its_files_expires_and_one_whose_event_never_came_fails(
    api: ApiClient, stack: Stack, tmp_path: Path
) -> None:
    # Given a job with no upload past its window, and one whose upload arrived but
    # whose event Lambda gave up on long ago
    stack.configure(max_live_jobs_per_owner=0)
    never_uploaded = _create(api)
    _set_deadline(stack, never_uploaded, int(time.time()) - 60)
    target = write_wav(tmp_path / "t.wav", tone_mix(3.0, RATE), RATE)
    stranded, _ = create_and_upload(api, target, None, preset="warm")
    _set_deadline(stack, stranded, int(time.time()) - UPLOAD_EVENT_MAX_AGE_S - OVERDUE_GRACE_S - 60)
    # When the sweep runs
    report = _sweep()
    # Then the first expired and the second failed with a message that says what happened
    assert never_uploaded in report["expired"]
    assert stranded in report["failed"]
    failed = api.call("GET", f"/jobs/{stranded}").body
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "internal_error"
    assert "never started" in failed["error"]["message"]
