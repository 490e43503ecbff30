"""The README's curl walkthrough, pasted whole into bash against a real `mastering serve`.

The block is taken from README.md as it stands (section "Try it locally", the fenced
bash block that calls curl), so the README cannot drift from what works. It is fed to
an interactive bash on its standard input, the way a paste reaches a terminal: history
expansion and all. Only curl and jq are used, as the README promises.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.audio_factory import pcm16_wav_bytes
from tests.local.serve_process import API_KEY, Serve, running_serve

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RATE = 44_100
SECONDS = 4.0
# The block polls for up to 10 minutes itself; this only guards against a hung shell.
PASTE_DEADLINE_S = 300.0


def walkthrough() -> str:
    """The one bash block of "Try it locally" that talks to the API with curl."""
    text = README.read_text()
    section = re.search(r"^## Try it locally\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no 'Try it locally' section"
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", section.group(1), re.S | re.M)
    curl_blocks = [b for b in blocks if "curl " in b]
    assert len(curl_blocks) == 1, f"expected one curl block, found {len(curl_blocks)}"
    block: str = curl_blocks[0]
    return block


def require_tools() -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: the README walkthrough needs bash, curl "
            "and jq (Debian: apt-get install -y curl jq)"
        )


def write_song(path: Path) -> Path:
    """A 16-bit stereo WAV of a few decaying notes: enough music for the engine."""
    rng = np.random.default_rng(7)
    t = np.arange(int(SECONDS * RATE)) / RATE
    envelope = np.exp(-3.0 * np.mod(t, 0.5))
    channels = []
    for _ in range(2):
        voice = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
            for f0 in (110.0, 220.0, 330.0)
            for k in range(1, 5)
        )
        channels.append(envelope * (voice + 0.05 * rng.standard_normal(t.size)))
    samples = np.stack(channels, axis=1)
    samples *= 0.3 / np.max(np.abs(samples))
    path.write_bytes(pcm16_wav_bytes(samples, RATE))
    return path


def paste(block: str, folder: Path, *, api: str, key: str) -> subprocess.CompletedProcess[str]:
    """Run ``block`` as if pasted into an interactive bash started in ``folder``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "API": api,
        "KEY": key,
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-i"],
        input=block,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=PASTE_DEADLINE_S,
        check=False,
    )


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    require_tools()
    with running_serve(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty working folder, as a user's would be; tmp_path removes it afterwards."""
    work = tmp_path / "walkthrough"
    work.mkdir()
    return work


def test_the_pasted_walkthrough_downloads_the_mastered_song(serve: Serve, folder: Path) -> None:
    # Given a folder with song.wav and a running local stack
    write_song(folder / "song.wav")

    # When the README's block is pasted into bash there
    result = paste(walkthrough(), folder, api=serve.api, key=API_KEY)

    # Then it polls until the job succeeds and saves the mastered song as a WAV
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert '"status":"succeeded"' in result.stdout, output
    assert "saved song-mastered.wav" in result.stdout, output
    with wave.open(str(folder / "song-mastered.wav")) as mastered:
        assert mastered.getframerate() == RATE
        assert mastered.getnchannels() == 2
        assert mastered.getnframes() == int(SECONDS * RATE)


def test_a_refused_job_is_reported_and_nothing_is_downloaded(serve: Serve, folder: Path) -> None:
    # Given a song and the wrong API key
    write_song(folder / "song.wav")

    # When the block is pasted
    result = paste(walkthrough(), folder, api=serve.api, key="not-the-key")

    # Then it says why, fails, and leaves no result behind
    assert result.returncode != 0
    assert "job not created" in result.stderr
    assert '"unauthorized"' in result.stderr
    assert not (folder / "song-mastered.wav").exists()


def test_a_failed_job_stops_the_polling_and_is_reported(serve: Serve, folder: Path) -> None:
    # Given a "song.wav" that is not audio at all
    (folder / "song.wav").write_text("these are liner notes, not a recording\n" * 50)

    # When the block is pasted
    result = paste(walkthrough(), folder, api=serve.api, key=API_KEY)

    # Then the loop stops at the failed job, shows its error and downloads nothing
    assert result.returncode != 0, result.stdout
    assert '"status":"failed"' in result.stdout
    assert '"invalid_audio"' in result.stdout
    assert "did not succeed" in result.stderr
    assert not (folder / "song-mastered.wav").exists()
