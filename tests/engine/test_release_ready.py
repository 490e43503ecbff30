"""Release-ready masters, judged by ffmpeg's own meter on every file as decoded.

Every kind of material (dense and loud, quiet and dynamic, bass-heavy, near-mono
speech) at 44.1, 48 and 96 kHz, mastered with the default true-peak limiter to every
format: no file reads over the ceiling, each lands at the loudness asked, and each
result's reported loudness and true peak are what ffmpeg measures on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.signals import song
from mastering.errors import WarningCode
from mastering.formats import OutputFormat
from mastering.options import RequestedOptions, resolve_options
from mastering.pipeline import MasteringOutcome, MasteringRequest, master_files
from mastering.presets import find_preset
from tests.audio_factory import MATERIALS, material, write_wav
from tests.oracles import ffmpeg_meter

pytestmark = pytest.mark.slow

ALL_FORMATS = tuple(OutputFormat)
REFERENCE_RATE = 44_100
LOUDNESS_TOLERANCE_LU = 0.5
# Our meter against ffmpeg's on the same file: loudness agrees to the meters' rounding,
# true peak within what ffmpeg's 192 kHz resampler adds (true_peak.METER_TOLERANCE_DB).
REPORTED_LUFS_TOLERANCE = 0.1
REPORTED_PEAK_TOLERANCE = 0.2


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    return write_wav(
        folder / "reference.wav",
        song("electronic", 22, REFERENCE_RATE, 15.0),
        REFERENCE_RATE,
        subtype="PCM_24",
    )


def _master(
    tmp_path: Path,
    target: Path,
    *,
    reference: Path | None = None,
    preset: str | None = None,
    requested: RequestedOptions,
    outputs: tuple[OutputFormat, ...] = ALL_FORMATS,
) -> MasteringOutcome:
    found = find_preset(preset) if preset else None
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return master_files(
        MasteringRequest(
            target=target,
            reference=reference,
            preset_id=found.id if found else None,
            outputs=outputs,
            work_dir=work,
            min_duration_s=1.0,
            max_duration_s=3600.0,
            options=resolve_options(requested, found.defaults() if found else None),
        ),
        lambda stage, percent: None,
    )


def _check_files(outcome: MasteringOutcome, loudness: float, ceiling: float) -> None:
    assert not outcome.warnings, outcome.warnings
    for fmt, path in outcome.files.items():
        reading = ffmpeg_meter(path)
        reported = outcome.measurements[fmt]
        # No file over the ceiling, as ffmpeg decodes and meters it...
        assert reading.true_peak_dbtp <= ceiling, (fmt, reading)
        # ...each at the loudness asked...
        assert reading.lufs == pytest.approx(loudness, abs=LOUDNESS_TOLERANCE_LU), (fmt, reading)
        # ...and the job says what ffmpeg reads.
        assert reported.lufs == pytest.approx(reading.lufs, abs=REPORTED_LUFS_TOLERANCE)
        assert reported.true_peak_dbtp is not None
        assert reported.true_peak_dbtp <= reading.true_peak_dbtp + 0.05
        assert reported.true_peak_dbtp >= reading.true_peak_dbtp - REPORTED_PEAK_TOLERANCE


@pytest.mark.parametrize("rate", [44_100, 48_000, 96_000])
@pytest.mark.parametrize("kind", MATERIALS)
def test_every_format_keeps_the_ceiling_and_lands_at_minus_14(
    tmp_path: Path, reference: Path, kind: str, rate: int
) -> None:
    # Given a track of this kind at this rate
    target = write_wav(tmp_path / f"{kind}.wav", material(kind, 12.0, rate), rate, "PCM_24")
    # When it is mastered to every format at -14 LUFS, default ceiling
    outcome = _master(
        tmp_path, target, reference=reference, requested=RequestedOptions(loudness=-14.0)
    )
    # Then every file, MP3 included, is under -1 dBTP and at -14 LUFS by ffmpeg's meter
    assert outcome.options.loudness_lufs == -14.0
    assert outcome.options.true_peak_dbtp == -1.0
    _check_files(outcome, -14.0, -1.0)


@pytest.mark.parametrize("kind", MATERIALS)
def test_the_default_follows_the_references_loudness(
    tmp_path: Path, reference: Path, kind: str
) -> None:
    # Given a reference whose loudness is known to the job
    target = write_wav(tmp_path / f"{kind}.wav", material(kind, 12.0, 44_100), 44_100)
    # When it is mastered with no options at all
    outcome = _master(tmp_path, target, reference=reference, requested=RequestedOptions())
    # Then it lands at the reference's loudness, under -1 dBTP
    reference_lufs = outcome.metrics["reference_lufs"]
    assert reference_lufs is not None
    assert outcome.options.loudness == "reference"
    assert outcome.options.loudness_lufs == pytest.approx(reference_lufs, abs=0.01)
    _check_files(outcome, reference_lufs, -1.0)


def test_apple_music_lands_at_minus_16_under_a_lower_ceiling(
    tmp_path: Path, reference: Path
) -> None:
    target = write_wav(tmp_path / "song.wav", material("bass_heavy", 12.0, 48_000), 48_000)
    outcome = _master(
        tmp_path,
        target,
        reference=reference,
        requested=RequestedOptions(loudness="apple_music", true_peak_dbtp=-2.0),
    )
    assert outcome.options.loudness_lufs == -16.0
    _check_files(outcome, -16.0, -2.0)


def test_a_loudness_out_of_reach_is_a_warning_not_a_squashed_track(
    tmp_path: Path, reference: Path
) -> None:
    # Given a quiet, dynamic piece and -6 LUFS asked
    target = write_wav(tmp_path / "soft.wav", material("quiet_dynamic", 12.0, 44_100), 44_100)
    outcome = _master(
        tmp_path,
        target,
        reference=reference,
        requested=RequestedOptions(loudness=-6.0),
        outputs=(OutputFormat.WAV24,),
    )
    # Then the job succeeds short of it, says so, and still keeps the ceiling; it goes as
    # far as sane limiting allows (this piece reaches -14 LUFS, and a little more)
    codes = [warning.code for warning in outcome.warnings]
    assert codes == [WarningCode.LOUDNESS_NOT_REACHED]
    assert "-6.0 LUFS" in outcome.warnings[0].message
    reading = ffmpeg_meter(outcome.files[OutputFormat.WAV24])
    assert reading.true_peak_dbtp <= -1.0
    assert -14.5 < reading.lufs < -6.5


def test_flat_keeps_the_targets_balance_and_only_sets_loudness(tmp_path: Path) -> None:
    # Given a bass-heavy track mastered with the Flat preset (intensity 0)
    samples = material("bass_heavy", 12.0, 44_100)
    target = write_wav(tmp_path / "song.wav", samples, 44_100, "PCM_24")
    outcome = _master(
        tmp_path, target, preset="Flat", requested=RequestedOptions(), outputs=(OutputFormat.WAV24,)
    )
    result, _ = sf.read(outcome.files[OutputFormat.WAV24], dtype="float32")
    # Then its tonal balance is the target's own (octave bands within a dB, once
    # levels are matched), at the preset's loudness
    assert outcome.options.intensity == 0.0
    ours, theirs = _octave_levels(result, 44_100), _octave_levels(samples, 44_100)
    shift = np.median(ours - theirs)
    assert np.max(np.abs(ours - theirs - shift)) < 1.0
    assert ffmpeg_meter(outcome.files[OutputFormat.WAV24]).lufs == pytest.approx(-14.0, abs=0.5)


def _octave_levels(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mid-channel level (dB) of the octave bands from 63 Hz to 8 kHz."""
    mid = samples.mean(axis=1).astype(np.float64)
    power = np.abs(np.fft.rfft(mid)) ** 2
    freqs = np.fft.rfftfreq(mid.shape[0], 1.0 / rate)
    centres = 63.0 * 2.0 ** np.arange(8)
    return np.array(
        [
            10.0 * np.log10(power[(freqs >= c / np.sqrt(2)) & (freqs < c * np.sqrt(2))].sum())
            for c in centres
        ]
    )


def test_intensity_applies_that_share_of_the_matching_eq(tmp_path: Path, reference: Path) -> None:
    # Given a bass-heavy target mastered against a reference at intensity 0, 0.5 and 1
    samples = material("bass_heavy", 12.0, 44_100)
    target = write_wav(tmp_path / "song.wav", samples, 44_100, "PCM_24")
    shapes = {}
    for intensity in (0.0, 0.5, 1.0):
        folder = tmp_path / str(intensity)
        folder.mkdir()
        outcome = _master(
            folder,
            target,
            reference=reference,
            requested=RequestedOptions(intensity=intensity, loudness=-16.0),
            outputs=(OutputFormat.WAV24,),
        )
        result, _ = sf.read(outcome.files[OutputFormat.WAV24], dtype="float32")
        # The EQ's effect per octave band in dB, its overall level set aside
        change = _octave_levels(result, 44_100) - _octave_levels(samples, 44_100)
        shapes[intensity] = change - change.mean()
    # Then 0 changes nothing, and 0.5 is half of the full match's change in dB
    full = shapes[1.0]
    assert np.max(np.abs(full)) > 6.0  # the match itself is far from flat
    assert np.max(np.abs(shapes[0.0])) < 0.3
    share = float(shapes[0.5] @ full / (full @ full))
    assert share == pytest.approx(0.5, abs=0.08)


def test_presets_differ_where_their_descriptions_say(tmp_path: Path) -> None:
    # Given one target mastered with Treble Boost and with Bass Boost
    target = write_wav(tmp_path / "song.wav", material("dense_loud", 12.0, 44_100), 44_100)
    levels = {}
    for name in ("Treble Boost", "Bass Boost"):
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        outcome = _master(
            folder, target, preset=name, requested=RequestedOptions(), outputs=(OutputFormat.WAV24,)
        )
        audio, _ = sf.read(outcome.files[OutputFormat.WAV24], dtype="float32")
        levels[name] = _octave_levels(audio, 44_100)
    # Then Treble Boost's master is brighter and Bass Boost's fuller, by several dB
    treble, bass = levels["Treble Boost"], levels["Bass Boost"]
    assert (treble[6:] - bass[6:]).mean() - (treble[:2] - bass[:2]).mean() > 6.0
