"""The `mastering` command: help, local mastering, and `submit` against a local stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import soundfile as sf

from mastering.cli.main import main
from mastering.devstack.processes import free_port
from mastering.devstack.stack import LocalStack, StackConfig
from mastering.options import PLATFORM_LOUDNESS
from tests.audio_factory import tone_mix, write_wav
from tests.jobflow import declare, upload_file

RATE = 44_100
STACK_KEY = "cli-test-key"
# Bounds how long a broken stack can hold a test up (submit's default is 30 minutes).
TIMEOUT = ["--timeout", "120"]
# Guards against a hang, not timing checks.
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tracks")
    text = folder / "lyrics.wav"
    text.write_text("la la la, this is not audio\n" * 40)
    return {
        "target": write_wav(
            folder / "demo take.wav", tone_mix(6.0, RATE, seed=1, peak_dbfs=-18), RATE
        ),
        "reference": write_wav(folder / "ref.wav", tone_mix(6.0, RATE, seed=2, peak_dbfs=-1), RATE),
        "text": text,
    }


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        StackConfig(
            api_port=0,
            s3_port=0,
            api_key=STACK_KEY,
            work_dir=tmp_path_factory.mktemp("stack"),
            sweep_interval_s=3600,
        )
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize("command", [[], ["serve"], ["submit"], ["master"], ["stdio"]])
def test_help_of_every_command_exits_0(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # When help is asked for
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    # Then it is shown and the exit status is 0
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: mastering {' '.join(command)}".rstrip())
    # And it says what each exit status means
    assert "exit status:" in shown
    assert "2 " in shown.split("exit status:")[1]


@pytest.mark.parametrize("command", ["master", "submit", "stdio"])
def test_help_lists_the_mastering_options_and_the_platforms(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    options = ("--loudness", "--true-peak", "--intensity", "--limiter", "--preset")
    if command == "stdio":
        options = ('"loudness"', "true_peak_dbtp", "intensity", "limiter", '"preset"')
    for option in options:
        assert option in shown
    for platform, lufs in PLATFORM_LOUDNESS.items():
        assert f"{platform} ({lufs:g})" in shown


def test_console_entry_point_runs() -> None:
    # When the command is run as a program
    result = subprocess.run(
        [sys.executable, "-m", "mastering.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then it answers without loading anything heavy, and exits 0
    assert result.returncode == 0
    assert result.stdout.startswith("mastering 0.")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["polish"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_master_writes_the_result_and_prints_metrics(
    tracks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a quiet target and a loud reference
    output = tmp_path / "out" / "mastered.wav"
    # When they are mastered locally
    status = main(
        [
            "master",
            str(tracks["target"]),
            "--reference",
            str(tracks["reference"]),
            "-o",
            str(output),
        ]
    )
    # Then a 16-bit WAV of the target's length is written
    assert status == 0
    info = sf.info(output)
    assert (info.subtype, info.samplerate) == ("PCM_16", RATE)
    assert info.frames == sf.info(tracks["target"]).frames
    # And the metrics and the progress are shown
    shown = capsys.readouterr()
    assert "Loudness:" in shown.out
    assert "True peak:" in shown.out
    assert "100% done" in shown.err
    # And the work directory is gone
    assert sorted(p.name for p in output.parent.iterdir()) == ["mastered.wav"]


@pytest.mark.slow
def test_master_with_a_preset_by_name_writes_the_format_of_the_extension(
    tracks: dict[str, Path], tmp_path: Path
) -> None:
    # When a preset is given by its display name, in capitals, with mastering options
    output = tmp_path / "warm.flac"
    args = ["--preset", "WARM", "--loudness", "spotify", "--intensity", "0.5"]
    assert main(["master", str(tracks["target"]), *args, "-o", str(output)]) == 0
    # Then the result is written in the format its name says
    assert sf.info(output).format == "FLAC"


def test_master_refuses_non_audio_with_its_error_code(
    tracks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the target is not audio
    output = tmp_path / "never.wav"
    status = main(["master", str(tracks["text"]), "--preset", "balanced", "-o", str(output)])
    # Then it fails as bad input, with the service's error code and message, and writes nothing
    assert status == 2
    err = capsys.readouterr().err
    assert "invalid_audio" in err
    assert "Traceback" not in err
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nowhere/song.wav", "--preset", "warm", "-o", "x.wav"], "target not found"),
        (["{target}", "--preset", "warm", "-o", "x.ogg"], "cannot tell the format"),
        (["{target}", "--preset", "nope", "-o", "x.wav"], "no preset 'nope'"),
        (
            ["{target}", "--preset", "warm", "--format", "wav24", "-o", "x.mp3"],
            "--format wav24 does not fit 'x.mp3': a wav24 file ends in .wav",
        ),
        (
            ["{target}", "--preset", "warm", "--format", "mp3", "-o", "x.flac"],
            "--format mp3 does not fit 'x.flac'",
        ),
        (
            ["{target}", "--preset", "warm", "--format", "flac", "-o", "x.ogg"],
            "--format flac does not fit 'x.ogg'",
        ),
        (["{target}", "--preset", "warm", "--loudness", "loud", "-o", "x.wav"], "--loudness:"),
        (
            ["{target}", "--preset", "warm", "--loudness", "-40", "-o", "x.wav"],
            "--loudness: must be between -30 and -5 LUFS",
        ),
        (
            ["{target}", "--preset", "warm", "--true-peak", "3", "-o", "x.wav"],
            "--true-peak: must be between -9 and 0 dBTP",
        ),
        (
            ["{target}", "--preset", "warm", "--intensity", "1.5", "-o", "x.wav"],
            "--intensity: must be between 0 and 1",
        ),
        (
            ["{target}", "--preset", "warm", "--limiter", "brickwall", "-o", "x.wav"],
            "--limiter: must be one of true_peak, matchering",
        ),
        (
            ["{target}", "--preset", "warm", "--limiter", "matchering", "--true-peak", "-1"],
            "--true-peak: the matchering limiter sets its own loudness and ceiling",
        ),
    ],
)
def test_master_usage_errors_exit_2(
    tracks: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    # When the command line asks for something impossible
    if "-o" not in args:
        args = [*args, "-o", "x.wav"]
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    status = main(["master", *(a.format(target=tracks["target"]) for a in args)])
    # Then it is a usage error naming what is wrong, and nothing is written
    assert status == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["master", "submit"])
def test_an_option_that_is_not_a_number_is_a_usage_error(
    command: str, tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, str(tracks["target"]), "--preset", "warm", "--true-peak", "low"])
    assert exited.value.code == 2
    assert "argument --true-peak: not a number: 'low'" in capsys.readouterr().err


def test_submit_checks_the_options_before_calling_the_api(
    tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no API at all
    api = f"http://127.0.0.1:{free_port()}"
    # When a job is submitted with a loudness the matchering limiter cannot take
    args = ["--limiter", "matchering", "--loudness", "-14", "--api", api]
    status = main(["submit", str(tracks["target"]), "--preset", "warm", *args])
    # Then it is refused as bad usage before any call (not "cannot reach the API")
    assert status == 2
    assert "--loudness: the matchering limiter" in capsys.readouterr().err


def test_serve_refuses_a_bad_master_timeout_as_bad_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASTER_TIMEOUT_S", "soon")
    assert main(["serve", "--api-port", str(free_port()), "--s3-port", str(free_port())]) == 2
    assert "MASTER_TIMEOUT_S must be a whole number of seconds" in capsys.readouterr().err


@pytest.mark.slow
def test_submit_masters_through_the_local_stack(
    local_stack: LocalStack,
    tracks: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When a target and reference are submitted for two formats
    status = main(
        [
            "submit",
            str(tracks["target"]),
            "--reference",
            str(tracks["reference"]),
            "--format",
            "wav16",
            "--format",
            "flac",
            "--output-dir",
            str(tmp_path),
            "--api",
            local_stack.api_url,
            "--api-key",
            STACK_KEY,
            *TIMEOUT,
        ]
    )
    # Then both results are downloaded under the target's name
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo take-mastered.flac",
        "demo take-mastered.wav",
    ]
    assert sf.info(tmp_path / "demo take-mastered.wav").frames == sf.info(tracks["target"]).frames
    # And the metrics are printed
    out = capsys.readouterr().out
    assert "LUFS" in out
    assert "dBTP" in out


@pytest.mark.slow
def test_submit_reports_a_failed_job_with_its_code(
    local_stack: LocalStack, tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "submit",
            str(tracks["text"]),
            "--preset",
            "balanced",
            "--api",
            local_stack.api_url,
            "--api-key",
            STACK_KEY,
            *TIMEOUT,
        ]
    )
    # Then the job's failure on its input is reported as bad input
    assert status == 2
    assert "failed: invalid_audio:" in capsys.readouterr().err


@pytest.mark.slow
def test_submit_with_a_wrong_key_says_unauthorized(
    local_stack: LocalStack, tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submit", str(tracks["target"]), "--preset", "warm", "--api", local_stack.api_url]
    assert main([*args, "--api-key", "wrong", *TIMEOUT]) == 2
    assert "unauthorized" in capsys.readouterr().err


def test_submit_to_nothing_says_the_api_is_unreachable(
    tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    assert main(["submit", str(tracks["target"]), "--preset", "warm", "--api", api]) == 1
    assert "cannot reach the API" in capsys.readouterr().err


def wait_for_replacement(stack: LocalStack, dead: int) -> None:
    """Supervise, as serve does every second, until a new worker stands in for ``dead``."""
    deadline = time.monotonic() + DEADLINE_S
    while not (stack.worker_pids and dead not in stack.worker_pids):
        assert time.monotonic() < deadline, "no worker replaced the dead one"
        stack.supervise()
        time.sleep(0.1)


def connections_closed_by_clients(port: int) -> int:
    """Connections to ``port`` on this machine that the client has closed and the server
    has not yet (TCP state CLOSE_WAIT), from the kernel's tables."""
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "08":  # 08: CLOSE_WAIT
                count += 1
    return count


def wait_for_orphaned_long_polls(stack: LocalStack) -> None:
    """Until the emulator has ended every long poll whose worker was killed.

    The emulator serves a receive until its wait ends, even for a client that is gone,
    and would hand it the next message (hidden until its visibility timeout). The dead
    client's socket stays in CLOSE_WAIT on the emulator's side until then.
    """
    port = urlsplit(stack.s3_url).port
    assert port is not None
    deadline = time.monotonic() + DEADLINE_S
    while connections_closed_by_clients(port):
        assert time.monotonic() < deadline, "a dead worker's long poll never ended"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_jobs_still_run(
    local_stack: LocalStack, tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given the stack's idle worker killed outright
    (old,) = local_stack.worker_pids
    os.kill(old, signal.SIGKILL)
    # When the stack supervises its workers
    wait_for_replacement(local_stack, old)
    # (and the dead worker's pending long poll has ended, or it would swallow the job's
    # message until its visibility timeout)
    wait_for_orphaned_long_polls(local_stack)

    # Then the new worker masters the next job
    args = ["submit", str(tracks["target"]), "--preset", "warm", "-o", str(tmp_path)]
    assert main([*args, "--api", local_stack.api_url, "--api-key", STACK_KEY, *TIMEOUT]) == 0
    assert (tmp_path / "demo take-mastered.wav").is_file()


@pytest.mark.slow
def test_a_worker_dying_mid_job_fails_the_job_as_lambda_would(
    local_stack: LocalStack, tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given a job mastering a long track (five minutes: seconds of work)
    clip, rate = sf.read(tracks["target"], always_2d=True, dtype="float32")
    long_track = write_wav(tmp_path / "long.wav", np.tile(clip, (50, 1)), rate)
    api = requests.Session()
    api.headers["X-Api-Key"] = STACK_KEY
    created = api.post(
        f"{local_stack.api_url}/jobs",
        json={"target": declare(long_track), "preset": "warm"},
        timeout=10,
    ).json()
    job_url = f"{local_stack.api_url}/jobs/{created['job_id']}"
    assert upload_file(created["uploads"]["target"], long_track).ok

    # When the worker is killed while it masters, as the kernel kills a sandbox out of memory
    deadline = time.monotonic() + DEADLINE_S
    while api.get(job_url, timeout=10).json()["status"] != "processing":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    (worker,) = local_stack.worker_pids
    os.kill(worker, signal.SIGKILL)
    wait_for_replacement(local_stack, worker)

    # Then the on-failure destination has failed the job with the reason Lambda gives
    job = api.get(job_url, timeout=10).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "internal_error"
    assert "memory" in job["error"]["message"]
    # And no orphaned mastering process is left working for nobody
    assert stack_processes(local_stack) == sorted(local_stack.worker_pids)


def stack_processes(stack: LocalStack) -> list[int]:
    """Live processes (from /proc) whose command line names the stack's work directory:
    its workers, and any mastering child forked from one."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        # A zombie has finished; it only waits to be reaped.
        if state != "Z" and str(stack.work_dir) in cmdline:
            found.append(int(proc.name))
    return sorted(found)
