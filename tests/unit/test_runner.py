"""The master function's domain with in-memory ports: when a job starts, what it
leaves behind, and how it ends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mastering.config import Settings
from mastering.errors import InvalidAudio
from mastering.formats import InputKind, InputRole, OutputFormat
from mastering.jobs.model import DeclaredInput, Job, JobStatus, Stage
from mastering.pipeline import MasteringOutcome, MasteringRequest
from mastering.storage.keys import upload_key
from mastering.worker.isolation import run_inline
from mastering.worker.runner import UploadNotice, WorkerPorts, accept_upload, run_job
from tests.fakes import FakeStorage, InMemoryJobStore

JOB = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        jobs_table="jobs",
        uploads_bucket="uploads",
        results_bucket="results",
        work_dir=tmp_path / "tmp",
    )


def _job(*roles: InputRole) -> Job:
    declared = DeclaredInput("song.wav", 1000, "audio/wav", InputKind.WAV)
    return Job(
        job_id=JOB,
        owner="u",
        status=JobStatus.AWAITING_UPLOAD,
        created_at="2026-11-23T10:00:00.000Z",
        updated_at="2026-11-23T10:00:00.000Z",
        inputs={role: declared for role in roles},
        outputs=(OutputFormat.WAV16, OutputFormat.MP3),
        deadline_at=int(NOW.timestamp()) + 3600,
    )


def _fake_master(calls: list[MasteringRequest]) -> Callable[..., MasteringOutcome]:
    def master(request: MasteringRequest, on_progress: Callable[[Stage, int], None]) -> Any:
        calls.append(request)
        on_progress(Stage.MATCHING, 50)
        files = {}
        for fmt in request.outputs:
            path = request.work_dir / f"out-{fmt}"
            path.write_bytes(b"mastered " + str(fmt).encode())
            files[fmt] = path
        return MasteringOutcome(files=files, metrics={"result_lufs": -9.0})

    return master


@pytest.fixture
def world(settings: Settings) -> dict[str, Any]:
    store, storage = InMemoryJobStore(), FakeStorage()
    calls: list[MasteringRequest] = []
    ports = WorkerPorts(
        settings=settings,
        store=store,
        storage=storage,
        clock=lambda: NOW,
        master=_fake_master(calls),
        preload=lambda: None,
        isolate=run_inline,
    )
    return {
        "ports": ports,
        "store": store,
        "storage": storage,
        "calls": calls,
    }


def _land(world: dict[str, Any], role: InputRole, data: bytes = b"RIFF....") -> Job | None:
    world["storage"].objects[("uploads", upload_key(JOB, role))] = data
    return accept_upload(UploadNotice("uploads", upload_key(JOB, role)), ports=world["ports"])


def test_job_starts_only_when_its_last_input_lands_and_only_once(world: dict[str, Any]) -> None:
    world["store"].create(_job(InputRole.TARGET, InputRole.REFERENCE))
    assert _land(world, InputRole.TARGET) is None
    assert _land(world, InputRole.TARGET) is None  # duplicate event
    ready = _land(world, InputRole.REFERENCE)
    assert ready is not None
    assert ready.status is JobStatus.QUEUED
    assert _land(world, InputRole.REFERENCE) is None  # duplicate after queueing


def test_success_uploads_every_output_and_records_metrics(
    world: dict[str, Any], settings: Settings
) -> None:
    world["store"].create(_job(InputRole.TARGET))
    ready = _land(world, InputRole.TARGET)
    assert ready is not None
    done = run_job(ready, remaining_s=lambda: 600.0, ports=world["ports"])
    assert done.status is JobStatus.SUCCEEDED
    assert (done.stage, done.percent) == (Stage.DONE, 100)
    assert set(done.results) == {OutputFormat.WAV16, OutputFormat.MP3}
    assert world["storage"].objects[("results", f"results/{JOB}/mastered.mp3")] == b"mastered mp3"
    assert done.metrics is not None
    assert done.metrics["result_lufs"] == -9.0
    assert done.metrics["processing_s"] is not None
    assert list(settings.work_dir.iterdir()) == []


def test_failed_upload_of_a_result_removes_the_ones_already_written(
    world: dict[str, Any],
) -> None:
    world["store"].create(_job(InputRole.TARGET))
    ready = _land(world, InputRole.TARGET)
    assert ready is not None
    world["storage"].fail_uploads_after = 1
    done = run_job(ready, remaining_s=lambda: 600.0, ports=world["ports"])
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error["code"] == "internal_error"
    assert not [key for (bucket, key) in world["storage"].objects if bucket == "results"]


def test_typed_engine_error_ends_the_job_with_its_code(world: dict[str, Any]) -> None:
    def refuse(request: MasteringRequest, on_progress: Any) -> MasteringOutcome:
        raise InvalidAudio("The target is not audio")

    ports = world["ports"]
    world["store"].create(_job(InputRole.TARGET))
    ready = _land(world, InputRole.TARGET)
    assert ready is not None
    import dataclasses

    done = run_job(
        ready, remaining_s=lambda: 600.0, ports=dataclasses.replace(ports, master=refuse)
    )
    assert done.status is JobStatus.FAILED
    assert done.error == {"code": "invalid_audio", "message": "The target is not audio"}


def test_oversized_second_input_fails_before_any_download(world: dict[str, Any]) -> None:
    world["store"].create(_job(InputRole.TARGET, InputRole.REFERENCE))
    _land(world, InputRole.TARGET)
    ready = _land(world, InputRole.REFERENCE, data=b"x" * 5000)  # declared 1000
    assert ready is not None
    done = run_job(ready, remaining_s=lambda: 600.0, ports=world["ports"])
    assert done.error is not None
    assert done.error["code"] == "file_too_large"
    assert world["storage"].downloads == []
    assert world["calls"] == []
