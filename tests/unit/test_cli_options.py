"""`mastering master` and `mastering submit` with mastering options, without an engine
or a server: what the pipeline is asked for, the POST /jobs body, and what is printed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mastering.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    chosen_preset,
    exit_code_of,
    format_metrics,
    requested_options,
)
from mastering.cli.main import build_parser, main
from mastering.cli.master import output_format
from mastering.cli.submit import job_body
from mastering.errors import (
    InternalError,
    InvalidAudio,
    JobWarning,
    MasteringError,
    ProcessingTimeout,
    SilentAudio,
    WarningCode,
)
from mastering.formats import OutputFormat
from mastering.jobs.model import Stage
from mastering.options import Limiter, RequestedOptions, resolve_options
from mastering.pipeline import FileMeasurement, MasteringOutcome, MasteringRequest
from mastering.presets import PRESETS


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A file to master; the fake engine never reads it."""
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF not really audio")
    return path


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "ref.flac"
    path.write_bytes(b"fLaC not really audio")
    return path


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[MasteringRequest]:
    """The pipeline replaced by one that records its request and writes a stand-in file."""
    calls: list[MasteringRequest] = []

    def master(request: MasteringRequest, on_progress: Callable[[Stage, int], None]) -> Any:
        calls.append(request)
        files = {}
        for fmt in request.outputs:
            files[fmt] = request.work_dir / f"out.{fmt}"
            files[fmt].write_text(f"mastered as {fmt}")
        return MasteringOutcome(
            files=files,
            metrics={"target_lufs": -28.0, "result_lufs": -14.2, "result_true_peak_dbtp": -1.3},
            measurements={fmt: FileMeasurement(-14.1, -1.4) for fmt in request.outputs},
            warnings=(JobWarning(WarningCode.LOUDNESS_NOT_REACHED, "Landed at -9.8 LUFS."),),
        )

    monkeypatch.setattr("mastering.pipeline.master_files", master)
    return calls


def test_master_passes_the_preset_and_the_resolved_options_to_the_pipeline(
    fake_pipeline: list[MasteringRequest],
    target: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When a preset is named in capitals with a loudness, a ceiling and an intensity
    output = tmp_path / "out" / "song-master.wav"
    args = ["--preset", "BRIGHT", "--loudness", "-12", "--true-peak", "-1.5", "--intensity", ".3"]
    status = main(["master", str(target), *args, "-o", str(output)])
    # Then the pipeline is asked for that preset with those values over its defaults
    assert status == 0
    (request,) = fake_pipeline
    assert request.preset_id == "bright"
    assert request.reference is None
    assert request.options == resolve_options(
        RequestedOptions(loudness=-12.0, true_peak_dbtp=-1.5, intensity=0.3),
        PRESETS["bright"].defaults(),
    )
    assert request.outputs == (OutputFormat.WAV16,)
    assert output.read_text() == "mastered as wav16"
    # And the file's own loudness and true peak are printed, and the warning is shown
    shown = capsys.readouterr()
    assert "wav16:      -14.1 LUFS, true peak -1.4 dBTP" in shown.out
    assert "mastering master: warning: Landed at -9.8 LUFS. (loudness_not_reached)" in shown.err


def test_master_without_options_gets_the_services_defaults(
    fake_pipeline: list[MasteringRequest], target: Path, reference: Path, tmp_path: Path
) -> None:
    output = tmp_path / "master.wav"
    args = ["--reference", str(reference), "--format", "wav24", "-o", str(output)]
    assert main(["master", str(target), *args]) == 0
    (request,) = fake_pipeline
    assert request.options == resolve_options(RequestedOptions())
    assert request.outputs == (OutputFormat.WAV24,)


def test_the_matchering_limiter_reaches_the_pipeline(
    fake_pipeline: list[MasteringRequest], target: Path, reference: Path, tmp_path: Path
) -> None:
    args = ["--reference", str(reference), "--limiter", "MATCHERING", "-o", str(tmp_path / "m.mp3")]
    assert main(["master", str(target), *args]) == 0
    (request,) = fake_pipeline
    assert request.options.limiter is Limiter.MATCHERING
    assert request.outputs == (OutputFormat.MP3,)


@pytest.mark.parametrize(
    ("name", "requested", "expected"),
    [
        ("song.wav", None, OutputFormat.WAV16),
        ("song.WAV", "wav24", OutputFormat.WAV24),
        ("song.wave", "wav16", OutputFormat.WAV16),
        ("song.flac", None, OutputFormat.FLAC),
        ("song.mp3", "mp3", OutputFormat.MP3),
        ("song", "flac", OutputFormat.FLAC),
        ("song.master", "mp3", OutputFormat.MP3),
    ],
)
def test_the_output_format_fits_the_file_name(
    name: str, requested: str | None, expected: OutputFormat
) -> None:
    assert output_format(Path(name), requested) == expected


def submit_args(*extra: str) -> Any:
    return build_parser().parse_args(["submit", "song.wav", "--preset", "warm", *extra])


def test_the_job_body_carries_only_the_options_given(target: Path) -> None:
    # Given a submit with a loudness platform (in capitals) and an intensity
    args = submit_args("--preset", "Warm", "--loudness", "Apple_Music", "--intensity", "0.7")
    # When the POST /jobs body is built
    body = job_body(
        target,
        None,
        chosen_preset(args),
        [OutputFormat.WAV16, OutputFormat.MP3],
        requested_options(args),
    )
    # Then it names the preset by id, and "mastering" holds those two options, checked
    assert body == {
        "target": {
            "filename": "song.wav",
            "size": target.stat().st_size,
            "content_type": "audio/wav",
        },
        "outputs": ["wav16", "mp3"],
        "preset": "warm",
        "mastering": {"loudness": "apple_music", "intensity": 0.7},
    }


def test_the_job_body_of_a_reference_job_without_options_has_no_mastering(
    target: Path, reference: Path
) -> None:
    args = build_parser().parse_args(["submit", str(target), "--reference", str(reference)])
    body = job_body(target, reference, None, [OutputFormat.FLAC], requested_options(args))
    assert set(body) == {"target", "reference", "outputs"}
    assert body["reference"]["content_type"] == "audio/flac"


def test_the_job_body_sends_numbers_as_numbers(target: Path) -> None:
    args = submit_args("--loudness", "-14", "--true-peak", "-2", "--limiter", "true_peak")
    body = job_body(target, None, PRESETS["warm"], [OutputFormat.WAV16], requested_options(args))
    assert body["mastering"] == {"loudness": -14.0, "true_peak_dbtp": -2.0, "limiter": "true_peak"}


def test_the_metrics_show_each_files_loudness_and_true_peak() -> None:
    # Given a job's metrics and its results as GET /jobs/{id} gives them
    metrics = {"target_lufs": -30.0, "reference_lufs": -9.0, "result_lufs": -14.0}
    results: dict[str, dict[str, Any]] = {
        "wav16": {"url": "https://x", "lufs": -14.02, "true_peak_dbtp": -1.04},
        "mp3": {"url": "https://y", "lufs": -14.1, "true_peak_dbtp": -1.01},
        "flac": {"url": "https://z"},
    }
    # When they are printed
    shown = format_metrics(metrics, processing_s=2.5, files=results).splitlines()
    # Then each measured file has its line, between the totals and the timings
    assert shown == [
        "Loudness:   -30.0 LUFS -> -14.0 LUFS (reference -9.0 LUFS)",
        "True peak:  n/a",
        "wav16:      -14.0 LUFS, true peak -1.0 dBTP",
        "mp3:        -14.1 LUFS, true peak -1.0 dBTP",
        "Duration:   n/a",
        "Time:       2.5 s mastering",
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidAudio("not audio"), EXIT_USAGE),
        (SilentAudio("silent"), EXIT_USAGE),
        (InternalError("crashed"), EXIT_FAILED),
        (ProcessingTimeout("too slow"), EXIT_FAILED),
    ],
)
def test_refused_input_exits_2_and_a_failed_service_exits_1(
    error: MasteringError, code: int
) -> None:
    assert exit_code_of(error) == code
