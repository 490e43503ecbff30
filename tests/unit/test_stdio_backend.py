"""The stdio backend with a fake engine: what the pipeline is asked for, retries of
internal errors, result names that never collide, the settings and the .env file,
and an error log line for every error reply."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mastering.cli.common import EXIT_USAGE, CliError
from mastering.cli.stdio import load_dotenv_file, settings_from_env, writable_folder
from mastering.cli.stdio_backend import (
    OUTPUT_FORMAT,
    StdioBackend,
    StdioSettings,
    claim_output_path,
)
from mastering.errors import InvalidAudio, JobWarning, WarningCode
from mastering.jobs.model import Stage
from mastering.options import RequestedOptions, resolve_options
from mastering.pipeline import FileMeasurement, MasteringOutcome, MasteringRequest
from mastering.presets import PRESETS
from mastering.worker.isolation import run_inline

Master = Callable[[MasteringRequest, Callable[[Stage, int], None]], MasteringOutcome]
ORIGINAL_ENV_EXAMPLE = """\
# MasterMatcher Python Backend Configuration

# Output directory for processed audio files
OUTPUT_DIR=processed

# Log configuration
LOG_LEVEL=INFO
LOG_FILE=mastermatcher.log

# Processing settings
MAX_PROCESSING_TIME=300  # Maximum processing time in seconds
TEMP_DIR=temp

# Monitoring settings
MONITOR_INTERVAL=1  # Monitoring interval in seconds
MAX_RETRIES=3  # Maximum number of retries for failed operations
"""
SETTING_NAMES = [line.split("=")[0] for line in ORIGINAL_ENV_EXAMPLE.splitlines() if "=" in line]


@pytest.fixture
def settings(tmp_path: Path) -> StdioSettings:
    return StdioSettings(
        output_dir=writable_folder(tmp_path / "out", "OUTPUT_DIR"),
        log_level=logging.DEBUG,
        log_file=None,
        max_processing_s=60.0,
        max_retries=3,
        temp_dir=tmp_path / "tmp",
    )


@pytest.fixture
def tracks(tmp_path: Path) -> dict[str, Path]:
    """Files that exist; the fake engine never reads them."""
    paths = {
        "song": tmp_path / "a" / "song.wav",
        "other song": tmp_path / "b" / "song.wav",
        "reference": tmp_path / "ref.wav",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF not really")
    return paths


def fake_master(
    calls: list[MasteringRequest] | None = None,
    *,
    attempts_file: Path | None = None,
    failures: int = 0,
    fail_with: Callable[[], Exception] = lambda: RuntimeError("a passing fault"),
) -> Master:
    """An engine that writes ``mastered <target name>`` and measures -14 LUFS / -1.2 dBTP.

    The first ``failures`` attempts raise ``fail_with()``; attempts are counted in
    ``attempts_file`` because each runs in a forked child.
    """

    def master(request: MasteringRequest, on_progress: Callable[[Stage, int], None]) -> Any:
        if calls is not None:
            calls.append(request)
        if attempts_file is not None:
            with attempts_file.open("a") as log:
                log.write("attempt\n")
            if len(attempts_file.read_text().splitlines()) <= failures:
                raise fail_with()
        on_progress(Stage.MATCHING, 50)
        result = request.work_dir / "result.wav"
        result.write_text(f"mastered {request.target.name}")
        return MasteringOutcome(
            files={OUTPUT_FORMAT: result},
            metrics={"target_lufs": -30.0, "reference_lufs": -9.5, "result_lufs": -14.1},
            measurements={OUTPUT_FORMAT: FileMeasurement(lufs=-14.0, true_peak_dbtp=-1.2)},
            warnings=(JobWarning(WarningCode.LOUDNESS_NOT_REACHED, "Reached -14.0 of -9 LUFS."),),
        )

    return master


def serve(backend: StdioBackend, out: io.StringIO, *requests: Any) -> list[dict[str, str]]:
    already = len(out.getvalue().splitlines())
    backend.serve([(json.dumps(r) if not isinstance(r, str) else r).encode() for r in requests])
    return [json.loads(line) for line in out.getvalue().splitlines()[already:]]


def attempts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_the_pipeline_gets_the_preset_and_the_resolved_options(
    settings: StdioSettings, tracks: dict[str, Path]
) -> None:
    # Given a backend on a recording engine
    calls: list[MasteringRequest] = []
    out = io.StringIO()
    backend = StdioBackend(settings, out, master=fake_master(calls), isolate=run_inline)
    # When the plugin asks for a preset by name, with a loudness and an intensity
    (reply,) = serve(
        backend,
        out,
        {
            "user_track": str(tracks["song"]),
            "preset": "Warm",
            "mastering": {"loudness": "spotify", "intensity": 0.5},
        },
    )
    # Then the pipeline is asked for that preset, with those options over its defaults
    assert reply["status"] == "success", reply
    (request,) = calls
    warm = PRESETS["warm"]
    assert (request.target, request.reference, request.preset_id) == (tracks["song"], None, "warm")
    assert request.options == resolve_options(
        RequestedOptions(loudness="spotify", intensity=0.5), warm.defaults()
    )
    assert request.outputs == (OUTPUT_FORMAT,)


def test_the_success_message_gives_the_results_loudness_true_peak_and_warnings(
    settings: StdioSettings, tracks: dict[str, Path]
) -> None:
    out = io.StringIO()
    backend = StdioBackend(settings, out, master=fake_master())
    (reply,) = serve(
        backend,
        out,
        {"user_track": str(tracks["song"]), "reference_track": str(tracks["reference"])},
    )
    # Then the message carries the written file's own measurement and the warning
    assert reply["status"] == "success"
    assert "-14.0 LUFS, true peak -1.2 dBTP" in reply["message"]
    assert "was -30.0 LUFS; reference -9.5 LUFS" in reply["message"]
    assert "Warning: Reached -14.0 of -9 LUFS." in reply["message"]


def test_results_of_tracks_with_the_same_name_never_overwrite_each_other(
    settings: StdioSettings, tracks: dict[str, Path]
) -> None:
    # Given an earlier result already in OUTPUT_DIR under the first name
    earlier = settings.output_dir / "processed_song.wav"
    earlier.write_text("yesterday's master")
    out = io.StringIO()
    backend = StdioBackend(settings, out, master=fake_master())
    ref = str(tracks["reference"])
    # When two different song.wav are mastered, and the first one twice
    replies = serve(
        backend,
        out,
        {"user_track": str(tracks["song"]), "reference_track": ref},
        {"user_track": str(tracks["other song"]), "reference_track": ref},
        {"user_track": str(tracks["song"]), "reference_track": ref},
    )
    # Then each gets a name of its own and the earlier result is untouched
    paths = [Path(reply["output_path"]) for reply in replies]
    assert [p.name for p in paths] == [
        "processed_song-2.wav",
        "processed_song-3.wav",
        "processed_song-4.wav",
    ]
    assert all(p.read_text() == "mastered song.wav" for p in paths)
    assert earlier.read_text() == "yesterday's master"
    # And nothing else is left in the folder
    assert sorted(p.name for p in settings.output_dir.iterdir()) == sorted(
        ["processed_song.wav", *(p.name for p in paths)]
    )


def test_claiming_a_name_creates_it_exclusively(tmp_path: Path) -> None:
    first = claim_output_path(tmp_path, "take")
    second = claim_output_path(tmp_path, "take")
    assert (first.name, second.name) == ("processed_take.wav", "processed_take-2.wav")
    assert first.exists()
    assert second.exists()


def test_an_internal_error_is_retried_and_the_retry_succeeds(
    settings: StdioSettings,
    tracks: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an engine whose first two attempts fail unexpectedly (in the forked child)
    counter = tmp_path / "attempts"
    out = io.StringIO()
    backend = StdioBackend(settings, out, master=fake_master(attempts_file=counter, failures=2))
    # When a request is served with MAX_RETRIES=3
    with caplog.at_level(logging.WARNING, logger="mastering.stdio"):
        (reply,) = serve(
            backend,
            out,
            {"user_track": str(tracks["song"]), "reference_track": str(tracks["reference"])},
        )
    # Then the third attempt's result is the answer, and the retries are logged
    assert reply["status"] == "success", reply
    assert attempts(counter) == 3
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == 2
    assert "attempt 1 of 4 failed (Mastering failed unexpectedly)" in retried[0]


def test_retries_end_at_max_retries_with_an_error(
    settings: StdioSettings, tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given an engine that always fails, and one retry allowed
    counter = tmp_path / "attempts"
    out = io.StringIO()
    backend = StdioBackend(
        replace(settings, max_retries=1),
        out,
        master=fake_master(attempts_file=counter, failures=99),
    )
    (reply,) = serve(
        backend,
        out,
        {"user_track": str(tracks["song"]), "reference_track": str(tracks["reference"])},
    )
    # Then it gave up after two attempts, and says so
    assert reply == {"status": "error", "message": "Mastering failed unexpectedly after 2 attempts"}
    assert attempts(counter) == 2
    assert list(settings.output_dir.iterdir()) == []


def test_audio_the_engine_refuses_is_not_retried(
    settings: StdioSettings, tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given an engine that refuses the audio
    counter = tmp_path / "attempts"
    out = io.StringIO()
    master = fake_master(
        attempts_file=counter, failures=99, fail_with=lambda: InvalidAudio("Not an audio file")
    )
    backend = StdioBackend(settings, out, master=master)
    (reply,) = serve(
        backend,
        out,
        {"user_track": str(tracks["song"]), "reference_track": str(tracks["reference"])},
    )
    # Then the refusal is the answer after one attempt
    assert reply == {"status": "error", "message": "Not an audio file"}
    assert attempts(counter) == 1


def test_every_error_reply_is_logged_with_its_request(
    settings: StdioSettings, tracks: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Given requests that each fail in another way
    out = io.StringIO()
    refusing = fake_master(
        attempts_file=tracks["song"].parent / "n",
        failures=99,
        fail_with=lambda: InvalidAudio("Not an audio file"),
    )
    backend = StdioBackend(settings, out, master=refusing)
    with caplog.at_level(logging.ERROR, logger="mastering.stdio"):
        replies = serve(
            backend,
            out,
            "this is not json\n",
            {"user_track": "/a.wav", "preset": "Polka"},
            {"user_track": str(tracks["song"]), "reference_track": "/nowhere/ref.wav"},
            {"user_track": str(tracks["song"]), "reference_track": str(tracks["reference"])},
        )
    # Then every reply is an error, and each has an ERROR line with its reason and request
    assert [r["status"] for r in replies] == ["error"] * 4
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 4
    for number, (line, reply) in enumerate(zip(logged, replies, strict=True), start=1):
        assert line.startswith(f"request {number} failed: {reply['message']}; request: ")
    assert "'this is not json'" in logged[0]
    assert '"preset": "Polka"' in logged[1]
    assert "/nowhere/ref.wav" in logged[2]
    assert str(tracks["song"]) in logged[3]


def test_the_original_backends_defaults_apply() -> None:
    settings = settings_from_env({})
    assert settings.output_dir == Path("processed")
    assert settings.max_retries == 3
    assert settings.max_processing_s == 300.0
    assert settings.log_level == logging.INFO
    assert settings.log_file is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_PROCESSING_TIME", "soon", "MAX_PROCESSING_TIME must be a number of seconds"),
        ("MAX_PROCESSING_TIME", "0", "more than 0 seconds"),
        ("MAX_RETRIES", "2.5", "MAX_RETRIES must be a whole number"),
        ("MAX_RETRIES", "-1", "must not be negative"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be"),
    ],
)
def test_a_bad_setting_is_a_usage_error(name: str, value: str, message: str) -> None:
    with pytest.raises(CliError) as refused:
        settings_from_env({name: value})
    assert refused.value.exit_code == EXIT_USAGE
    assert message in str(refused.value)


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting in the environment; whatever a test's .env sets is removed after it
    (monkeypatch restores every name it touched)."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_settings")
def test_the_original_env_example_is_read_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the original backend's .env.example as .env in the working directory
    (tmp_path / ".env").write_text(ORIGINAL_ENV_EXAMPLE)
    monkeypatch.chdir(tmp_path)
    # When it is loaded
    assert load_dotenv_file() == tmp_path / ".env"
    # Then its values are read without their comments
    settings = settings_from_env(os.environ)
    assert settings.max_processing_s == 300.0
    assert settings.max_retries == 3
    assert settings.output_dir == Path("processed")
    assert settings.log_file == Path("mastermatcher.log")
    assert settings.temp_dir == Path("temp")


@pytest.mark.usefixtures("clean_settings")
def test_the_environment_wins_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a .env in a parent of the working directory, and one variable also set
    (tmp_path / ".env").write_text("OUTPUT_DIR=from-file\nMAX_RETRIES=5\n")
    (tmp_path / "plugin").mkdir()
    monkeypatch.chdir(tmp_path / "plugin")
    monkeypatch.setenv("MAX_RETRIES", "1")
    # When it is loaded
    load_dotenv_file()
    # Then the file fills in what is unset and the environment keeps what is set
    settings = settings_from_env(os.environ)
    assert settings.output_dir == Path("from-file")
    assert settings.max_retries == 1


@pytest.mark.usefixtures("clean_settings")
def test_no_env_file_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_dotenv_file() is None
    assert settings_from_env(os.environ).output_dir == Path("processed")


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("taken", "OUTPUT_DIR is not a folder: "),
        ("taken/out", "cannot be created: Not a directory"),
    ],
)
def test_an_output_dir_that_cannot_be_used_is_a_usage_error(
    tmp_path: Path, folder: str, message: str
) -> None:
    # Given a file where the folder (or one of its parents) would be
    (tmp_path / "taken").write_text("a file")
    # Then it is refused as a usage error
    with pytest.raises(CliError) as refused:
        writable_folder(tmp_path / folder, "OUTPUT_DIR")
    assert refused.value.exit_code == EXIT_USAGE
    assert message in str(refused.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    with pytest.raises(CliError, match="cannot be written to: Permission denied") as refused:
        writable_folder(folder, "OUTPUT_DIR")
    assert refused.value.exit_code == EXIT_USAGE
