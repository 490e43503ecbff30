"""The pipeline with reference profiles: cache-ready, identical inputs still caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mastering.audio.encode import write_files
from mastering.errors import AudioTooShort, IdenticalInputs, InternalError, SilentAudio
from mastering.formats import OutputFormat
from mastering.jobs.model import Stage
from mastering.pipeline import MasteringRequest, analyze_file, master_files
from tests.audio_factory import silence, tone_mix, write_wav

pytestmark = pytest.mark.slow
RATE = 44_100


def _request(tmp_path: Path, target: Path, **fields: object) -> MasteringRequest:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return MasteringRequest(
        target=target,
        outputs=(OutputFormat.WAV16, OutputFormat.FLAC),
        work_dir=work,
        min_duration_s=1.0,
        max_duration_s=900.0,
        **fields,  # type: ignore[arg-type]
    )


def _noop(stage: Stage, percent: int) -> None:
    return None


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    target = write_wav(tmp_path / "t.wav", tone_mix(6.0, 48_000, seed=1, peak_dbfs=-16.0), 48_000)
    reference = write_wav(tmp_path / "r.wav", tone_mix(6.0, RATE, seed=2, peak_dbfs=-1.0), RATE)
    return target, reference


def test_a_cached_profile_replaces_the_reference_file(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    target, reference = files
    first = master_files(_request(tmp_path, target, reference=reference), _noop)
    assert first.reference_profile is not None
    profile = type(first.reference_profile).from_bytes(first.reference_profile.to_bytes())
    reference.unlink()  # never read again
    second = master_files(_request(tmp_path, target, reference_profile=profile), _noop)
    assert second.reference_profile == profile
    assert second.metrics == first.metrics
    wav, rate = sf.read(second.files[OutputFormat.WAV16], always_2d=True)
    assert rate == 48_000
    assert wav.shape[0] == 6 * 48_000


def test_identical_audio_is_refused_even_with_a_profile(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    _, reference = files
    profile = analyze_file(reference, tmp_path, min_duration_s=1.0, max_duration_s=900.0)
    same_audio = write_wav(
        tmp_path / "copy.wav", sf.read(reference, dtype="float32", always_2d=True)[0], RATE
    )
    with pytest.raises(IdenticalInputs):
        master_files(_request(tmp_path, same_audio, reference_profile=profile), _noop)


def test_reference_validation_errors_name_the_reference(tmp_path: Path) -> None:
    short = write_wav(tmp_path / "short.wav", tone_mix(0.5, RATE), RATE)
    quiet = write_wav(tmp_path / "quiet.wav", silence(3.0, RATE), RATE)
    with pytest.raises(AudioTooShort, match="reference"):
        analyze_file(short, tmp_path, min_duration_s=1.0, max_duration_s=900.0)
    with pytest.raises(SilentAudio, match="reference"):
        analyze_file(quiet, tmp_path, min_duration_s=1.0, max_duration_s=900.0)


@pytest.mark.parametrize("fmt", [OutputFormat.WAV24, OutputFormat.FLAC])
def test_lossless_files_hold_libsndfiles_own_conversion(tmp_path: Path, fmt: OutputFormat) -> None:
    # Given a master a little over full scale
    samples = tone_mix(3.0, RATE, seed=3, peak_dbfs=0.5)
    (tmp_path / "ours").mkdir()
    # When it is written block by block
    ours = write_files(samples, RATE, (fmt,), tmp_path / "ours", block_frames=10_000)[fmt]
    # Then the file holds what libsndfile writes of the clipped samples in one call
    container, subtype = {
        OutputFormat.WAV24: ("WAV", "PCM_24"),
        OutputFormat.FLAC: ("FLAC", "PCM_24"),
    }[fmt]
    theirs = tmp_path / f"theirs.{container.lower()}"
    sf.write(theirs, np.clip(samples, -1.0, 1.0), RATE, subtype=subtype, format=container)
    a, _ = sf.read(ours, dtype="int32")
    b, _ = sf.read(theirs, dtype="int32")
    np.testing.assert_array_equal(a, b)
    assert sf.info(ours).subtype == subtype


def test_the_mp3_does_not_depend_on_how_the_master_is_fed_to_it(tmp_path: Path) -> None:
    # Given a master a little over full scale
    samples = tone_mix(3.0, RATE, seed=3, peak_dbfs=0.5)
    small, whole = tmp_path / "a", tmp_path / "b"
    small.mkdir()
    whole.mkdir()
    # When it is written in small blocks alongside a WAV, and in one block alone
    files = write_files(
        samples, RATE, (OutputFormat.WAV16, OutputFormat.MP3), small, block_frames=10_000
    )
    alone = write_files(samples, RATE, (OutputFormat.MP3,), whole, block_frames=1 << 20)
    # Then the MP3s are byte for byte the same, and nothing else is left behind
    assert files[OutputFormat.MP3].read_bytes() == alone[OutputFormat.MP3].read_bytes()
    assert sorted(path.name for path in small.iterdir()) == sorted(
        path.name for path in files.values()
    )


def test_a_failing_mp3_encoder_fails_the_outputs_and_leaves_nothing(tmp_path: Path) -> None:
    # Given an "ffmpeg" that reads a little and then fails, as a broken encoder would
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nhead -c 1000 >/dev/null\necho 'encoder exploded' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    samples = tone_mix(3.0, RATE, seed=3)
    # When the outputs are written
    with pytest.raises(InternalError, match="MP3"):
        write_files(
            samples,
            RATE,
            (OutputFormat.WAV16, OutputFormat.MP3),
            out,
            ffmpeg_path=str(fake),
            block_frames=10_000,
        )
    # Then no output, partial file or encoder log is left
    assert list(out.iterdir()) == []
