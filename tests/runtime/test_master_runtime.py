"""The master function under the Lambda runtime emulator: S3 events from events/ in,
mastered results (or a recorded failure) out, with Lambda's timeout enforced."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
import soundfile as sf

from tests.audio_factory import tone_mix, write_wav
from tests.conftest import ApiClient, Stack, s3_event_for
from tests.jobflow import declare, upload_file
from tests.runtime.conftest import RuntimeFactory
from tests.runtime.rie import Runtime, snapshot

pytestmark = pytest.mark.slow

RATE = 44_100
MASTER_MEMORY_MB = 2048
# The handler gives the mastering child what is left of the timeout after the
# downloads and the engine import, minus a 2 s reserve. With 6 s that leaves the child
# a couple of seconds here, while five minutes of audio in four formats takes it several
# times that; a much shorter timeout leaves nothing, and the job is refused before the
# child starts (also processing_timeout, but not the path this test is about).
LONG_TRACK_S = 300.0
SHORT_TIMEOUT_S = 6


def _long_track(path: Path, seconds: float, seed: int, peak_dbfs: float) -> Path:
    # Synthesising minutes of audio is slow; a repeated 15 s phrase is just as long.
    phrase = tone_mix(15.0, RATE, seed=seed, peak_dbfs=peak_dbfs)
    repeats = int(np.ceil(seconds / 15.0))
    return write_wav(path, np.tile(phrase, (repeats, 1))[: round(seconds * RATE)], RATE)


def _s3(stack: Stack) -> Any:
    return boto3.client("s3", endpoint_url=stack.endpoint, region_name="us-east-1")


def _stored_job(stack: Stack, job_id: str) -> dict[str, Any]:
    dynamodb = boto3.resource("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1")
    item: dict[str, Any] | None = (
        dynamodb.Table(os.environ["JOBS_TABLE"])
        .get_item(Key={"job_id": job_id}, ConsistentRead=True)
        .get("Item")
    )
    assert item is not None, f"job {job_id} is not in the table"
    return item


def _create_and_upload(
    api: ApiClient, target: Path, reference: Path, outputs: list[str]
) -> tuple[str, dict[str, int]]:
    """POST /jobs, then upload both files the way a browser does."""
    created = api.call(
        "POST",
        "/jobs",
        body={"target": declare(target), "reference": declare(reference), "outputs": outputs},
    )
    assert created.status == 201, created.body
    sizes = {}
    for role, path in (("target", target), ("reference", reference)):
        response = upload_file(created.body["uploads"][role], path)
        assert response.status_code in (200, 201, 204), response.text
        sizes[role] = path.stat().st_size
    return created.body["job_id"], sizes


def _deliver(master: Runtime, job_id: str, role: str, size: int) -> dict[str, Any]:
    payload, _ = master.invoke(s3_event_for(f"uploads/{job_id}/{role}", size))
    return payload


def _assert_sandbox_clean(master: Runtime, code_before: set[str]) -> None:
    # No job scratch left in /tmp, no forked mastering child left running, and
    # nothing written next to the code.
    assert master.job_work_dirs() == []
    processes = master.runtime_processes()
    assert len(processes) == 1, processes
    assert "awslambdaric" in next(iter(processes.values()))
    assert snapshot(master.task_root) == code_before


def test_uploaded_job_is_mastered_under_the_runtime(
    lambda_runtime: RuntimeFactory, api: ApiClient, stack: Stack, tmp_path: Path
) -> None:
    # Given a quiet target and a loud reference uploaded through the presigned POSTs
    target = write_wav(tmp_path / "my song.wav", tone_mix(8.0, RATE, seed=1, peak_dbfs=-18.0), RATE)
    reference = write_wav(
        tmp_path / "reference.wav", tone_mix(8.0, RATE, seed=2, peak_dbfs=-1.0), RATE
    )
    job_id, sizes = _create_and_upload(api, target, reference, ["wav16", "flac"])
    master = lambda_runtime("master", "app.handler", timeout_s=120, memory_mb=MASTER_MEMORY_MB)
    code_before = snapshot(master.task_root)

    # When S3's event for the target reaches the master function
    first = _deliver(master, job_id, "target", sizes["target"])

    # Then nothing runs yet: the reference is still missing
    assert first == {"jobs": {}}, master.log_tail()
    assert _stored_job(stack, job_id)["status"] == "awaiting_upload"

    # When the reference's event follows
    second = _deliver(master, job_id, "reference", sizes["reference"])

    # Then the job ran in this invocation and succeeded
    assert second == {"jobs": {job_id: "succeeded"}}, master.log_tail()
    item = _stored_job(stack, job_id)
    assert item["status"] == "succeeded"
    assert item.get("error") is None
    assert set(item["results"]) == {"wav16", "flac"}
    metrics = item["metrics"]
    assert float(metrics["duration_s"]) == pytest.approx(8.0, abs=0.01)
    assert float(metrics["result_lufs"]) > float(metrics["target_lufs"]) + 3
    assert float(metrics["processing_s"]) > 0

    # And the owner sees the results, and they are in the results bucket
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded"
    assert job["progress"] == {"stage": "done", "percent": 100}
    assert set(job["results"]) == {"wav16", "flac"}
    head = _s3(stack).head_object(
        Bucket=os.environ["RESULTS_BUCKET"], Key=f"results/{job_id}/mastered.wav"
    )
    assert head["ContentLength"] == job["results"]["wav16"]["size"]
    _s3(stack).head_object(
        Bucket=os.environ["RESULTS_BUCKET"], Key=f"results/{job_id}/mastered.flac"
    )

    # And the WAV a user downloads is the whole track, mastered and not clipping
    download = requests.get(job["results"]["wav16"]["url"], timeout=30)
    assert download.status_code == 200
    mastered, rate = sf.read(io.BytesIO(download.content), always_2d=True)
    assert rate == RATE
    assert mastered.shape[0] == sf.info(target).frames
    assert 0.01 < float(np.max(np.abs(mastered))) < 1.0

    # And the sandbox is as clean as the function found it
    _assert_sandbox_clean(master, code_before)


@pytest.fixture
def long_tracks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A quiet target and a loud reference of LONG_TRACK_S each (about 50 MB apiece)."""
    target = _long_track(tmp_path / "long target.wav", LONG_TRACK_S, seed=3, peak_dbfs=-18.0)
    reference = _long_track(tmp_path / "long reference.wav", LONG_TRACK_S, seed=4, peak_dbfs=-1.0)
    yield target, reference
    target.unlink(missing_ok=True)
    reference.unlink(missing_ok=True)


def test_job_longer_than_the_function_timeout_fails_instead_of_hanging(
    lambda_runtime: RuntimeFactory,
    api: ApiClient,
    stack: Stack,
    long_tracks: tuple[Path, Path],
) -> None:
    # Given a job on minutes-long tracks and a master function with a few seconds
    target, reference = long_tracks
    job_id, sizes = _create_and_upload(api, target, reference, ["wav16", "wav24", "flac", "mp3"])
    master = lambda_runtime(
        "master", "app.handler", timeout_s=SHORT_TIMEOUT_S, memory_mb=MASTER_MEMORY_MB
    )
    code_before = snapshot(master.task_root)
    assert _deliver(master, job_id, "target", sizes["target"]) == {"jobs": {}}

    # When the last upload's event starts the job
    outcome = _deliver(master, job_id, "reference", sizes["reference"])

    # Then the handler itself returned, before Lambda's timeout, with the job failed
    # (had the emulator's timeout struck, the answer would be "Task timed out after ...")
    assert outcome == {"jobs": {job_id: "failed"}}, master.log_tail()

    # And the job says why, in terms the user can act on, instead of hanging in processing
    item = _stored_job(stack, job_id)
    assert item["status"] == "failed"
    assert item["stage"] == "failed"
    assert item["error"]["code"] == "processing_timeout"
    # The mastering child was started and then stopped at its deadline (not refused
    # for lack of time up front).
    assert "took longer" in item["error"]["message"], item["error"]
    job = api.call("GET", f"/jobs/{job_id}").body
    assert job["status"] == "failed"
    assert job["error"]["code"] == "processing_timeout"
    assert job["results"] == {}

    # And no partial result was left in the results bucket
    listed = _s3(stack).list_objects_v2(
        Bucket=os.environ["RESULTS_BUCKET"], Prefix=f"results/{job_id}/"
    )
    assert listed["KeyCount"] == 0

    # And the sandbox survived and is clean: no scratch files, no stray child
    _assert_sandbox_clean(master, code_before)

    # And the same warm container keeps serving: a late duplicate event is ignored
    assert _deliver(master, job_id, "reference", sizes["reference"]) == {"jobs": {}}
