"""The fast integer paths of decoding and writing give libsndfile's own results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mastering.audio.decode import decode_audio
from mastering.audio.encode import write_files
from mastering.formats import OutputFormat


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
