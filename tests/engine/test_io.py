"""The fast integer paths of decoding and writing give libsndfile's own results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mastering.audio.decode import decode_audio
from mastering.audio.encode import encode
from mastering.engine.outputs import Measurement, write_outputs
from mastering.formats import OutputFormat

# The master as write_outputs reports it for lossless files (not measured here).
UNMEASURED = Measurement(lufs=None, true_peak_dbtp=None)


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
    # When it is written block-wise (numpy conversion) and by audio.encode (libsndfile's)
    ours = write_outputs(
        samples,
        48_000,
        (OutputFormat.WAV16,),
        tmp_path / "ours",
        master=UNMEASURED,
        block_frames=7_777,
    )
    theirs = encode(samples, 48_000, OutputFormat.WAV16, tmp_path / "theirs" / "x.wav")
    # Then the files are byte for byte the same
    assert ours[OutputFormat.WAV16].path.read_bytes() == theirs.read_bytes()
