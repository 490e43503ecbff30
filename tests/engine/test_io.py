"""The fast integer paths of decoding and writing give libsndfile's own results, and
neither needs more disk than its output (a full one is said as such)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mastering.audio.decode import decode_audio
from mastering.audio.encode import write_files
from mastering.errors import OUT_OF_DISK_MESSAGE
from mastering.formats import OutputFormat
from tests.audio_factory import to_ffmpeg, tone_mix


@pytest.mark.parametrize(
    ("frames", "channels", "container"),
    [
        (1, 1, "WAV"),
        (1_000, 2, "WAV"),
        (300_001, 2, "WAV"),
        (70_000, 1, "WAV"),
        (300_001, 2, "FLAC"),
        (70_000, 2, "AIFF"),
    ],
)
def test_16_bit_pcm_decodes_to_libsndfiles_floats(
    tmp_path: Path, frames: int, channels: int, container: str
) -> None:
    # Given a 16-bit file holding every extreme and random values
    rng = np.random.default_rng(frames)
    pcm = rng.integers(-32768, 32768, size=(frames, channels), dtype=np.int16)
    pcm.flat[:2] = [-32768, 32767][: pcm.size]
    path = tmp_path / f"in.{container.lower()}"
    sf.write(path, pcm, 44_100, subtype="PCM_16", format=container)
    # When it is decoded
    audio = decode_audio(path, tmp_path, role="target", max_duration_s=60.0)
    # Then the samples are exactly what libsndfile's float read gives
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    assert audio.samples.dtype == np.float32
    assert np.array_equal(audio.samples, expected)


def test_16_bit_wav_output_has_libsndfiles_bytes(tmp_path: Path) -> None:
    # Given a master with values across the range, at the rails and beyond them
    rng = np.random.default_rng(3)
    samples = (rng.standard_normal((200_000, 2)) * 0.3).astype(np.float32)
    samples *= np.logspace(-6, 0.3, samples.shape[0], dtype=np.float32)[:, None]
    samples[:8, 0] = [1.0, -1.0, 1.5, -1.5, 0.99999, -0.99999, 1e-9, -1e-9]
    # Values at and around libsndfile's rounding boundaries (steps of 2^-16 LSB)
    steps = rng.integers(-32768, 32768, 100_000) + rng.choice([-1, 1], 100_000) * 2.0**-17
    samples[8 : 8 + 100_000, 1] = steps / 32768
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    # When it is written block-wise (numpy conversion) and by libsndfile itself
    ours = write_files(
        samples, 48_000, (OutputFormat.WAV16,), tmp_path / "ours", block_frames=7_777
    )[OutputFormat.WAV16]
    theirs = tmp_path / "theirs" / "x.wav"
    sf.write(theirs, np.clip(samples, -1.0, 1.0), 48_000, subtype="PCM_16", format="WAV")
    # Then the files are byte for byte the same
    assert ours.read_bytes() == theirs.read_bytes()


def _third_harmonic_over_floor_db(samples: np.ndarray, rate: int, freq: float) -> float:
    """How far the 3rd harmonic stands above the noise floor around it, in dB."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0]))) ** 2
    bins = np.fft.rfftfreq(samples.shape[0], 1.0 / rate)
    harmonic = spectrum[np.abs(bins - 3 * freq) < 1.0].max()
    around = spectrum[(np.abs(bins - 3 * freq) > 50.0) & (np.abs(bins - 3 * freq) < 400.0)]
    return float(10.0 * np.log10(harmonic / np.median(around)))


def test_16_bit_output_is_dithered_so_quiet_passages_keep_no_distortion(tmp_path: Path) -> None:
    # Given a very quiet tone (-80 dBFS: a few 16-bit steps tall), as in a fade-out
    rate, freq = 48_000, 1_000.0
    t = np.arange(4 * rate) / rate
    tone = (10 ** (-80 / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    samples = np.stack([tone, tone], axis=1)
    (tmp_path / "plain").mkdir()
    (tmp_path / "dithered").mkdir()
    # When it is written to 16-bit WAV without and with dither
    plain = write_files(samples, rate, (OutputFormat.WAV16,), tmp_path / "plain")[
        OutputFormat.WAV16
    ]
    dithered = write_files(
        samples, rate, (OutputFormat.WAV16,), tmp_path / "dithered", dither=True
    )[OutputFormat.WAV16]
    plain_out, _ = sf.read(plain, dtype="float64")
    dithered_out, _ = sf.read(dithered, dtype="float64")
    # Then plain rounding turns the tone into a distorted one (harmonics stand out)...
    assert _third_harmonic_over_floor_db(plain_out[:, 0], rate, freq) > 40.0
    # ...while TPDF dither leaves an undistorted tone in a little steady noise
    assert _third_harmonic_over_floor_db(dithered_out[:, 0], rate, freq) < 15.0
    error_lsb = (dithered_out - samples) * 32768.0
    assert 0.4 < float(np.sqrt(np.mean(error_lsb**2))) < 0.6
    assert abs(float(np.corrcoef(error_lsb[:, 0], samples[:, 0])[0, 1])) < 0.02


# --- a full work directory -------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _run_on_small_disk(tmp_path: Path, script: str, size_kib: int) -> dict[str, Any]:
    """Run ``script`` (Python; the work directory is ``DISK``) in a private mount
    namespace whose ``DISK`` is a tmpfs of ``size_kib``, and return the JSON it prints.
    Skipped where user namespaces are not available."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    program = f"DISK = {str(disk)!r}\n" + textwrap.dedent(script)
    mount = f"mount -t tmpfs -o size={size_kib}k none {shlex.quote(str(disk))} || exit 77"
    run = f"{mount}; exec {shlex.quote(sys.executable)} -c {shlex.quote(program)}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", run],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_encoding_onto_a_full_disk_is_an_internal_error_that_says_so(tmp_path: Path) -> None:
    # Given a 10-second stereo master and a work directory with 256 KiB of room
    script = """
        import json, os
        from pathlib import Path
        from mastering.audio.encode import write_files
        from mastering.errors import MasteringError
        from mastering.formats import OutputFormat
        from tests.audio_factory import tone_mix
        samples = tone_mix(10.0, 44_100, 2, seed=1)
        try:
            write_files(samples, 44_100, (OutputFormat.WAV24, OutputFormat.MP3), Path(DISK))
            print(json.dumps({"code": "none"}))
        except MasteringError as error:
            print(json.dumps({**error.to_dict(), "left": os.listdir(DISK)}))
    """

    # When it is written as WAV and MP3
    result = _run_on_small_disk(tmp_path, script, size_kib=256)

    # Then the job's error is ours and honest, and no partial file is left
    assert result == {
        "code": "internal_error",
        "message": OUT_OF_DISK_MESSAGE,
        "left": [],
    }


def test_decoding_compressed_audio_needs_no_temporary_disk(tmp_path: Path) -> None:
    # Given a 20-second M4A (7 MB once decoded to float32) and a work directory with
    # 64 KiB of room
    source = tmp_path / "song.wav"
    sf.write(source, tone_mix(20.0, 44_100, 2, seed=2), 44_100, subtype="PCM_16")
    m4a = to_ffmpeg(source, tmp_path / "song.m4a", "-c:a", "aac")
    script = f"""
        import json, os
        from pathlib import Path
        from mastering.audio.decode import decode_audio
        from mastering.errors import MasteringError
        try:
            track = decode_audio(Path({str(m4a)!r}), Path(DISK), role="target",
                                 max_duration_s=60.0)
            print(json.dumps({{"seconds": track.duration_s, "left": os.listdir(DISK)}}))
        except MasteringError as error:
            print(json.dumps(error.to_dict()))
    """

    # When it is decoded there
    result = _run_on_small_disk(tmp_path, script, size_kib=64)

    # Then it decodes whole (straight from ffmpeg into memory), leaving nothing behind
    assert result["seconds"] == pytest.approx(20.0, abs=0.05), result
    assert result["left"] == []
