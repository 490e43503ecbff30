"""The job state machine, key scheme and input rules, without any AWS."""

from __future__ import annotations

import pytest

from mastering.errors import ErrorCode, InvalidRequest, error_from_code
from mastering.formats import InputKind, InputRole, input_kind_for
from mastering.jobs.model import ALLOWED_TRANSITIONS, TERMINAL_STATUSES, JobStatus, can_transition
from mastering.service.requests import parse_create_job
from mastering.storage.keys import parse_upload_key, result_key, upload_key
from mastering.worker.lifecycle import failure_reason

JOB = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"


def test_terminal_states_are_final_and_every_other_state_can_end() -> None:
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
    for status in set(JobStatus) - TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] & TERMINAL_STATUSES, status


def test_a_job_cannot_go_back_or_skip_processing() -> None:
    assert not can_transition(JobStatus.PROCESSING, JobStatus.QUEUED)
    assert not can_transition(JobStatus.AWAITING_UPLOAD, JobStatus.SUCCEEDED)
    assert not can_transition(JobStatus.QUEUED, JobStatus.EXPIRED)
    assert can_transition(JobStatus.AWAITING_UPLOAD, JobStatus.EXPIRED)


def test_upload_keys_round_trip_and_s3_url_encoding_is_undone() -> None:
    key = upload_key(JOB, InputRole.REFERENCE)
    assert key == f"uploads/{JOB}/reference"
    parsed = parse_upload_key(key.replace("/", "%2F"))
    assert parsed is not None
    assert (parsed.job_id, parsed.role) == (JOB, InputRole.REFERENCE)


@pytest.mark.parametrize(
    "key",
    [
        f"uploads/{JOB}/target.wav",
        f"uploads/{JOB}/../target",
        f"uploads/{JOB.upper()}/target",
        "uploads/x/target",
        f"results/{JOB}/target",
        "",
    ],
)
def test_keys_outside_the_scheme_are_not_uploads(key: str) -> None:
    assert parse_upload_key(key) is None


def test_result_keys_follow_the_contract() -> None:
    from mastering.formats import OutputFormat

    names = {fmt: result_key(JOB, fmt).rsplit("/", 1)[1] for fmt in OutputFormat}
    assert names == {
        OutputFormat.WAV16: "mastered.wav",
        OutputFormat.WAV24: "mastered-24bit.wav",
        OutputFormat.FLAC: "mastered.flac",
        OutputFormat.MP3: "mastered.mp3",
    }


@pytest.mark.parametrize(
    ("filename", "content_type", "kind"),
    [
        ("a.wav", "audio/wav", InputKind.WAV),
        ("a.wav", "audio/x-wav; charset=binary", InputKind.WAV),
        ("a.flac", "application/octet-stream", InputKind.FLAC),
        ("a.opus", "", InputKind.OGG),
        ("a.m4a", "audio/x-m4a", InputKind.MP4),
        ("C:\\music\\a.aiff", "application/octet-stream", InputKind.AIFF),
        ("a.txt", "text/plain", None),
        ("a.wav", "text/html", None),  # a specific non-audio type is not overridden
        ("a.m3u8", "application/octet-stream", None),
    ],
)
def test_declared_kind(filename: str, content_type: str, kind: InputKind | None) -> None:
    assert input_kind_for(filename, content_type) is kind


def test_outputs_default_to_wav16_and_duplicates_collapse() -> None:
    target = {"filename": "a.wav", "size": 10, "content_type": "audio/wav"}
    assert [str(f) for f in parse_create_job({"target": target, "preset": "x"}).outputs] == [
        "wav16"
    ]
    request = parse_create_job({"target": target, "preset": "x", "outputs": ["mp3", "mp3"]})
    assert [str(f) for f in request.outputs] == ["mp3"]


def test_validation_message_names_the_field() -> None:
    with pytest.raises(InvalidRequest, match=r"target\.size"):
        parse_create_job(
            {"target": {"filename": "a.wav", "content_type": "audio/wav"}, "preset": "warm"}
        )


def test_error_codes_round_trip_through_their_wire_form() -> None:
    for code in ErrorCode:
        rebuilt = error_from_code(str(code), "message")
        assert rebuilt.code is code
        assert rebuilt.message == "message"
    assert error_from_code("made_up", "x").code is ErrorCode.INTERNAL_ERROR


@pytest.mark.parametrize(
    ("lambda_error", "code"),
    [
        ("Task timed out after 900.00 seconds", ErrorCode.PROCESSING_TIMEOUT),
        ("Runtime exited with error: signal: killed", ErrorCode.INTERNAL_ERROR),
        ("RetriesExhausted", ErrorCode.INTERNAL_ERROR),
    ],
)
def test_lambda_failures_are_classified(lambda_error: str, code: ErrorCode) -> None:
    assert failure_reason(lambda_error)[0] is code
