"""One contract for every JobStore: the DynamoDB store (on moto) and the in-memory fake
the unit tests use must behave alike, or the unit tests prove nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mastering.formats import InputKind, InputRole, OutputFormat
from mastering.jobs.model import DeclaredInput, Job, JobStatus, ResultObject, Stage, iso
from mastering.jobs.rules import ttl_for
from mastering.jobs.store import JobAlreadyExists, JobStore
from mastering.options import MasteringOptions
from tests.conftest import Stack
from tests.fakes import InMemoryJobStore

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
JOB_ID = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"


@pytest.fixture(params=["dynamodb", "in-memory"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "in-memory":
        yield InMemoryJobStore()
    else:
        emulated: Stack = request.getfixturevalue("stack")
        yield emulated.store()


def _job(*roles: InputRole, job_id: str = JOB_ID, deadline: int = 0) -> Job:
    declared = DeclaredInput("song.wav", 1000, "audio/wav", InputKind.WAV)
    return Job(
        job_id=job_id,
        owner="user-1",
        status=JobStatus.AWAITING_UPLOAD,
        created_at=iso(NOW),
        updated_at=iso(NOW),
        inputs={role: declared for role in roles or (InputRole.TARGET,)},
        outputs=(OutputFormat.WAV16, OutputFormat.MP3),
        metadata={"track": "t1", "n": 3, "ratio": 0.5},
        deadline_at=deadline,
        mastering=MasteringOptions(loudness="spotify", loudness_lufs=-14.0),
    )


def _processing(store: JobStore) -> Job:
    store.create(_job())
    store.record_upload(JOB_ID, InputRole.TARGET, now=NOW)
    store.transition(
        JOB_ID, JobStatus.AWAITING_UPLOAD, JobStatus.QUEUED, now=NOW, stage=Stage.QUEUED, percent=0
    )
    job = store.transition(
        JOB_ID,
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        now=NOW,
        stage=Stage.DOWNLOADING,
        percent=5,
        attempt_id="attempt-1",
    )
    assert job is not None
    return job


def test_a_created_job_reads_back_as_it_was(store: JobStore) -> None:
    # Given a job
    job = _job(InputRole.TARGET, InputRole.REFERENCE)
    # When it is created and read
    store.create(job)
    # Then it is the same job, and a second create of the same id is refused
    assert store.get(JOB_ID) == job
    with pytest.raises(JobAlreadyExists):
        store.create(job)
    assert store.get("00000000-0000-4000-8000-000000000000") is None


def test_uploads_are_recorded_only_while_the_job_waits_for_them(store: JobStore) -> None:
    # Given a job waiting for a target and a reference
    store.create(_job(InputRole.TARGET, InputRole.REFERENCE))
    # When the target lands twice, then the reference
    first = store.record_upload(JOB_ID, InputRole.TARGET, now=NOW + timedelta(seconds=1))
    again = store.record_upload(JOB_ID, InputRole.TARGET, now=NOW + timedelta(seconds=2))
    both = store.record_upload(JOB_ID, InputRole.REFERENCE, now=NOW + timedelta(seconds=3))
    # Then each write says what has landed so far, repeats change nothing
    assert first is not None
    assert first.uploaded == {InputRole.TARGET}
    assert again is not None
    assert again.uploaded == {InputRole.TARGET}
    assert both is not None
    assert both.all_uploaded
    assert both.updated_at == iso(NOW + timedelta(seconds=3))
    # And once it has moved on, or for a job that does not exist, nothing is recorded
    store.transition(
        JOB_ID, JobStatus.AWAITING_UPLOAD, JobStatus.QUEUED, now=NOW, stage=Stage.QUEUED, percent=0
    )
    assert store.record_upload(JOB_ID, InputRole.TARGET, now=NOW) is None
    assert (
        store.record_upload("00000000-0000-4000-8000-000000000000", InputRole.TARGET, now=NOW)
        is None
    )


def test_a_transition_happens_only_from_the_status_it_expects(store: JobStore) -> None:
    # Given a processing job
    _processing(store)
    # When two runs both try to end it
    done_at = NOW + timedelta(minutes=1)
    results = {
        OutputFormat.WAV16: ResultObject(
            "results/x/mastered.wav", 10, lufs=-14.02, true_peak_dbtp=-1.2
        )
    }
    first = store.transition(
        JOB_ID,
        JobStatus.PROCESSING,
        JobStatus.SUCCEEDED,
        now=done_at,
        stage=Stage.DONE,
        percent=100,
        results=results,
        metrics={"result_lufs": -14.02, "duration_s": 8.0, "missing": None},
        mastering=MasteringOptions(loudness="reference", loudness_lufs=-9.5),
        warnings=({"code": "loudness_not_reached", "message": "close"},),
    )
    second = store.transition(
        JOB_ID,
        JobStatus.PROCESSING,
        JobStatus.FAILED,
        now=done_at,
        stage=Stage.FAILED,
        percent=40,
        error={"code": "internal_error", "message": "late"},
    )
    # Then only the first wins, with everything it wrote
    assert second is None
    assert first is not None
    assert first == store.get(JOB_ID)
    assert first.status is JobStatus.SUCCEEDED
    assert first.updated_at == iso(done_at)
    assert first.results == results
    assert first.metrics == {"result_lufs": -14.02, "duration_s": 8.0, "missing": None}
    assert first.mastering == MasteringOptions(loudness="reference", loudness_lufs=-9.5)
    assert first.warnings == ({"code": "loudness_not_reached", "message": "close"},)
    assert first.error is None


def test_a_transition_the_state_machine_forbids_is_a_programming_error(store: JobStore) -> None:
    store.create(_job())
    with pytest.raises(ValueError, match="no transition"):
        store.transition(
            JOB_ID,
            JobStatus.SUCCEEDED,
            JobStatus.PROCESSING,
            now=NOW,
            stage=Stage.DOWNLOADING,
            percent=0,
        )


def test_progress_is_written_only_by_the_run_that_holds_the_job(store: JobStore) -> None:
    # Given a job processing under attempt-1
    _processing(store)
    later = NOW + timedelta(seconds=30)
    # Then its own run may report progress, a stale run may not
    assert store.set_progress(
        JOB_ID, attempt_id="attempt-1", stage=Stage.MATCHING, percent=50, now=later
    )
    assert not store.set_progress(
        JOB_ID, attempt_id="attempt-0", stage=Stage.ENCODING, percent=80, now=later
    )
    job = store.get(JOB_ID)
    assert job is not None
    assert (job.stage, job.percent, job.updated_at) == (Stage.MATCHING, 50, iso(later))


def test_overdue_jobs_are_found_by_status_and_deadline(store: JobStore) -> None:
    # Given three waiting jobs, two past their deadline
    epoch = int(NOW.timestamp())
    ids = [f"3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8{n}" for n in range(3)]
    for job_id, deadline in zip(ids, (epoch - 10, epoch, epoch + 10), strict=True):
        store.create(_job(job_id=job_id, deadline=deadline))
    # Then the sweep's query finds exactly those, and none in another status
    assert sorted(store.overdue(JobStatus.AWAITING_UPLOAD, now_epoch=epoch, limit=10)) == ids[:2]
    assert store.overdue(JobStatus.PROCESSING, now_epoch=epoch, limit=10) == []


def test_records_are_kept_for_the_retention_period_after_their_last_change() -> None:
    assert ttl_for(30, NOW) == int((NOW + timedelta(days=30)).timestamp())


def _owned(owner: str, index: int, status: JobStatus = JobStatus.AWAITING_UPLOAD) -> Job:
    job = _job(job_id=f"3f0c1a52-7d1e-4b8e-9a61-{index:012d}")
    created = iso(NOW + timedelta(seconds=index))
    return Job(**{**job.__dict__, "owner": owner, "created_at": created, "status": status})


def test_an_owner_lists_only_their_jobs_newest_first_page_by_page(store: JobStore) -> None:
    # Given seven jobs of one owner, two of another, and one of the empty owner
    for index in range(7):
        store.create(_owned("alice", index))
    for index in range(7, 9):
        store.create(_owned("bob", index))
    store.create(_owned("", 9))
    # When alice pages through hers three at a time
    seen: list[str] = []
    page = store.list_for_owner("alice", limit=3)
    pages = 1
    while True:
        seen += [job.created_at for job in page.jobs]
        if page.next_position is None:
            break
        page = store.list_for_owner("alice", limit=3, after=page.next_position)
        pages += 1
    # Then she sees exactly her seven, newest first, in three pages
    expected = [iso(NOW + timedelta(seconds=i)) for i in reversed(range(7))]
    assert seen == expected
    assert pages == 3
    assert [job.owner for job in store.list_for_owner("", limit=10).jobs] == [""]


def test_a_listing_filtered_by_status_skips_other_statuses(store: JobStore) -> None:
    # Given an owner's jobs in mixed states
    for index in range(6):
        status = JobStatus.FAILED if index % 2 else JobStatus.AWAITING_UPLOAD
        store.create(_owned("alice", index, status))
    # When only the failed ones are asked for, two per page
    first = store.list_for_owner("alice", limit=2, status=JobStatus.FAILED)
    assert first.next_position is not None
    second = store.list_for_owner(
        "alice", limit=2, status=JobStatus.FAILED, after=first.next_position
    )
    # Then each page holds failed jobs only, newest first, and the listing ends
    statuses = {job.status for job in first.jobs + second.jobs}
    assert statuses == {JobStatus.FAILED}
    assert len(first.jobs) + len(second.jobs) == 3
    if second.next_position is not None:
        rest = store.list_for_owner(
            "alice", limit=2, status=JobStatus.FAILED, after=second.next_position
        )
        assert rest.jobs == []


def test_live_jobs_are_counted_per_owner_and_since_a_moment(store: JobStore) -> None:
    # Given alice with two live jobs, one ended, and bob with one live
    store.create(_owned("alice", 0))
    store.create(_owned("alice", 1, JobStatus.QUEUED))
    store.create(_owned("alice", 2, JobStatus.SUCCEEDED))
    store.create(_owned("bob", 3))
    # Then
    assert store.count_live("alice", created_since=NOW) == 2
    assert store.count_live("alice", created_since=NOW + timedelta(seconds=1)) == 1
    assert store.count_live("bob", created_since=NOW) == 1
    assert store.count_live("carol", created_since=NOW) == 0


def test_a_job_can_be_cancelled_from_any_live_state_and_deleted(store: JobStore) -> None:
    # Given a processing job
    _processing(store)
    # When it is cancelled
    cancelled = store.transition(
        JOB_ID,
        JobStatus.PROCESSING,
        JobStatus.CANCELLED,
        now=NOW,
        stage=Stage.CANCELLED,
        percent=5,
    )
    # Then it is terminal, progress stops and it cannot succeed any more
    assert cancelled is not None
    assert cancelled.status.is_terminal
    assert not store.set_progress(
        JOB_ID, attempt_id="attempt-1", stage=Stage.ENCODING, percent=80, now=NOW
    )
    with pytest.raises(ValueError, match="no transition"):
        store.transition(
            JOB_ID, JobStatus.CANCELLED, JobStatus.SUCCEEDED, now=NOW, stage=Stage.DONE, percent=100
        )
    # And once deleted it is gone (deleting twice is harmless)
    store.delete(JOB_ID)
    store.delete(JOB_ID)
    assert store.get(JOB_ID) is None
