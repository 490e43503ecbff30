"""Encoding masters: each output format reads back as the audio that went in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mastering.audio.decode import decode_audio
from mastering.audio.encode import output_path, write_files
from mastering.errors import InternalError
from mastering.formats import OutputFormat
from tests.audio_factory import best_correlation, tone_mix

RATE = 44_100


def encode(samples: np.ndarray, rate: int, fmt: OutputFormat, folder: Path, **options: Any) -> Path:
    """One format written by the service's writer into ``folder``."""
    frames = samples.reshape(samples.shape[0], -1).astype(np.float32)
    return write_files(frames, rate, (fmt,), folder, **options)[fmt]


@pytest.fixture
def master() -> np.ndarray:
    return tone_mix(2.0, RATE, 2, seed=7, peak_dbfs=-1.0)


@pytest.mark.parametrize(
    ("fmt", "container", "subtype", "tolerance"),
    [
        (OutputFormat.WAV16, "WAV", "PCM_16", 1 / 2**15),
        (OutputFormat.WAV24, "WAV", "PCM_24", 1 / 2**23),
        (OutputFormat.FLAC, "FLAC", "PCM_24", 1 / 2**23),
    ],
)
def test_lossless_outputs_round_trip(
    tmp_path: Path,
    master: np.ndarray,
    fmt: OutputFormat,
    container: str,
    subtype: str,
    tolerance: float,
) -> None:
    # Given a 2 s stereo master
    dest = output_path(tmp_path, fmt)

    # When it is encoded
    written = encode(master, RATE, fmt, tmp_path)

    # Then the file has the promised container and bit depth and holds the same samples
    assert written == dest
    info = sf.info(dest)
    assert (info.format, info.subtype) == (container, subtype)
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, master.shape[0])
    read_back, _ = sf.read(dest, dtype="float32", always_2d=True)
    np.testing.assert_allclose(read_back, master, atol=tolerance + 1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_mp3_is_320k_and_decodes_to_the_same_music(tmp_path: Path, master: np.ndarray) -> None:
    # Given a 2 s stereo master
    # When it is encoded as MP3
    dest = encode(master, RATE, OutputFormat.MP3, tmp_path)

    # Then it is a 320 kb/s MP3 that decodes to 2 s of the same stereo music
    info = sf.info(dest)
    assert (info.format, info.subtype) == ("MP3", "MPEG_LAYER_III")
    assert dest.read_bytes().find(b"\xff\xfb\xe0") >= 0  # MPEG-1 Layer III frame at 320 kb/s
    assert dest.stat().st_size == pytest.approx(320_000 / 8 * 2.0, rel=0.05)
    work = tmp_path / "work"
    work.mkdir()
    audio = decode_audio(dest, work, role="target", max_duration_s=60.0)
    assert (audio.sample_rate, audio.channels) == (RATE, 2)
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    assert best_correlation(audio.samples, master) > 0.95
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name, "work"]


@pytest.mark.parametrize(("rate", "mp3_rate"), [(96_000, 48_000), (88_200, 44_100)])
def test_mp3_of_a_high_rate_master_is_resampled(tmp_path: Path, rate: int, mp3_rate: int) -> None:
    # Given a master at a rate MP3 cannot carry at 320 kb/s
    samples = tone_mix(1.0, rate, 2, seed=8)

    # When it is encoded as MP3, Then it comes out at the nearest rate of the same family
    dest = encode(samples, rate, OutputFormat.MP3, tmp_path)
    info = sf.info(dest)
    assert info.samplerate == mp3_rate
    assert info.duration == pytest.approx(1.0, abs=0.1)


def test_mono_flat_array_is_written_as_mono(tmp_path: Path) -> None:
    # Given a mono master as a flat array
    samples = tone_mix(1.0, RATE, 1)[:, 0]

    # When it is encoded to WAV and MP3, Then both are one channel
    wav = encode(samples, RATE, OutputFormat.WAV16, tmp_path)
    mp3 = encode(samples, RATE, OutputFormat.MP3, tmp_path)
    assert sf.info(wav).channels == 1
    assert sf.info(mp3).channels == 1


def test_overs_are_clipped_not_wrapped(tmp_path: Path) -> None:
    # Given a master that goes past full scale both ways
    samples = np.array([[1.5, -1.5], [0.5, -0.5], [2.0, -3.0]] * 100, dtype=np.float32)

    # When it is encoded to 16-bit WAV
    dest = encode(samples, RATE, OutputFormat.WAV16, tmp_path)

    # Then overs sit at full scale with their sign kept, and the rest is untouched
    read_back, _ = sf.read(dest, dtype="float32", always_2d=True)
    assert read_back[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert read_back[0, 1] == pytest.approx(-1.0, abs=1e-4)
    assert read_back[1, 0] == pytest.approx(0.5, abs=1e-4)
    assert read_back[2, 1] == pytest.approx(-1.0, abs=1e-4)


def test_nan_in_a_master_fails_without_leaving_a_file(tmp_path: Path, master: np.ndarray) -> None:
    # Given a master with a NaN in it
    broken = master.copy()
    broken[100, 0] = np.nan

    # When it is encoded, Then it is our error and nothing is left behind
    with pytest.raises(InternalError):
        encode(broken, RATE, OutputFormat.WAV24, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_mp3_encode_leaves_no_file(tmp_path: Path, master: np.ndarray) -> None:
    # Given an ffmpeg path that does not exist
    # When an MP3 is encoded, Then it fails as our error and leaves no partial file
    with pytest.raises(InternalError, match="ffmpeg is not available"):
        encode(master, RATE, OutputFormat.MP3, tmp_path, ffmpeg_path=str(tmp_path / "nope"))
    assert list(tmp_path.iterdir()) == []


def test_encoding_replaces_an_existing_file(tmp_path: Path, master: np.ndarray) -> None:
    # Given a stale file where the master goes
    dest = output_path(tmp_path, OutputFormat.FLAC)
    dest.write_bytes(b"stale")

    # When the master is encoded there, Then the file is the new FLAC
    encode(master, RATE, OutputFormat.FLAC, tmp_path)
    assert sf.info(dest).frames == master.shape[0]
