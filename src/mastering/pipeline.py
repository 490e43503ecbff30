"""Mastering of local files: decode → validate → analyse → master → deliver.

The one pipeline behind the master function and the command-line tools: it joins
``audio`` (files to tracks and back), ``engine`` (tracks in, tracks out) and
``delivery`` (every format, measured as heard). It knows nothing of S3 or jobs;
progress goes through a callback in job stages, and failures are typed errors.

The reference is reduced to a ``ReferenceProfile`` first (or one is given, e.g. from a
cache, and the reference file is never decoded), then freed: only one track is held
in memory at a time, and the target is mastered in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mastering.engine.profile import ReferenceProfile
from mastering.errors import (
    IdenticalInputs,
    JobWarning,
    OutOfDisk,
    UnknownPreset,
    WarningCode,
    is_out_of_disk,
)
from mastering.formats import OutputFormat
from mastering.jobs.model import Stage
from mastering.options import DEFAULT_TRUE_PEAK_DBTP, Limiter, MasteringOptions
from mastering.presets import find_preset
from mastering.validation import validate_for_mastering

if TYPE_CHECKING:
    from mastering.engine.master import MasterOptions, MasterResult
    from mastering.track import Track

ProgressCallback = Callable[[Stage, int], None]


@dataclass(frozen=True)
class MasteringRequest:
    target: Path
    outputs: tuple[OutputFormat, ...]
    work_dir: Path
    min_duration_s: float
    max_duration_s: float
    reference: Path | None = None
    preset_id: str | None = None
    ffmpeg_path: str | None = None
    # A profile of the reference analysed earlier (e.g. cached by content hash and
    # ENGINE_VERSION): when given, ``reference`` is not decoded at all.
    reference_profile: ReferenceProfile | None = None
    # Resolved options (``mastering.options.resolve_options``); "reference" loudness is
    # resolved to a number from the reference's profile here.
    options: MasteringOptions = field(default_factory=MasteringOptions)


@dataclass(frozen=True)
class FileMeasurement:
    """A written result as its listener gets it (an MP3 measured decoded)."""

    lufs: float | None
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class MasteringOutcome:
    files: dict[OutputFormat, Path]
    metrics: dict[str, float | None]
    # The profile the target was mastered against, for the caller to cache.
    reference_profile: ReferenceProfile | None = None
    # The options as applied: loudness_lufs is always a number here unless the
    # matchering limiter chose the level.
    options: MasteringOptions = field(default_factory=MasteringOptions)
    measurements: dict[OutputFormat, FileMeasurement] = field(default_factory=dict)
    warnings: tuple[JobWarning, ...] = ()


def _same_file_content(first: Path, second: Path) -> bool:
    """Byte-for-byte equality, stopping at the first difference (hashing both files,
    as before, read every byte of two different files)."""
    if first.stat().st_size != second.stat().st_size:
        return False
    with first.open("rb") as one, second.open("rb") as other:
        while True:
            block = one.read(1024 * 1024)
            if block != other.read(1024 * 1024):
                return False
            if not block:
                return True


def _rounded(value: float | None, digits: int = 2) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value, digits)


def preload_engine() -> None:
    """Import the engine's modules (numpy, soundfile, scipy.fft; a few tenths of a
    second).

    Called in the master function before it forks its worker: the forked child
    inherits them, so only the first job of a container pays the import.
    """
    import mastering.audio.decode
    import mastering.delivery
    import mastering.engine.master
    import mastering.engine.preset_audio  # noqa: F401
    from mastering.engine import fft

    fft.load()


# Progress of the engine's work within the job: 30 % when it starts, 75 % when done.
_ENGINE_FIRST_PERCENT = 30
_ENGINE_LAST_PERCENT = 75


def master_track(
    target: Track,
    profile: ReferenceProfile,
    options: MasterOptions,
    on_progress: ProgressCallback,
) -> MasterResult:
    """The engine's part of a job, its progress as the ``matching`` stage. (The flow
    tests replace this to simulate an engine that fails, is killed or hangs.)"""
    from mastering.engine.master import master

    def report(fraction: float) -> None:
        span = _ENGINE_LAST_PERCENT - _ENGINE_FIRST_PERCENT
        on_progress(Stage.MATCHING, _ENGINE_FIRST_PERCENT + round(span * fraction))

    return master(target, profile, options, on_progress=report)


def analyze_file(
    path: Path,
    work_dir: Path,
    *,
    min_duration_s: float,
    max_duration_s: float,
    ffmpeg_path: str | None = None,
) -> ReferenceProfile:
    """Decode, validate and analyse a reference file (typed errors name the reference)."""
    from mastering.audio.decode import decode_audio
    from mastering.engine.analysis import analyze

    reference = decode_audio(
        path, work_dir, role="reference", max_duration_s=max_duration_s, ffmpeg_path=ffmpeg_path
    )
    validate_for_mastering(reference, role="reference", min_duration_s=min_duration_s)
    return analyze(reference)


def _reference_profile(request: MasteringRequest) -> ReferenceProfile:
    from mastering.engine.preset_audio import preset_profile

    if request.reference_profile is not None:
        return request.reference_profile
    if request.reference is not None:
        return analyze_file(
            request.reference,
            request.work_dir,
            min_duration_s=request.min_duration_s,
            max_duration_s=request.max_duration_s,
            ffmpeg_path=request.ffmpeg_path,
        )
    preset = find_preset(request.preset_id or "")
    if preset is None:
        raise UnknownPreset(f"There is no preset '{request.preset_id}'")
    return preset_profile(preset)


def _same_audio(target: Track, profile: ReferenceProfile) -> bool:
    from mastering.engine.analysis import audio_fingerprint

    shape = (target.sample_rate, target.frames, target.channels)
    if shape != (profile.sample_rate, profile.frames, profile.channels):
        return False
    return audio_fingerprint(target) == profile.fingerprint


def _engine_options(options: MasteringOptions, loudness_lufs: float | None) -> MasterOptions:
    from mastering.engine.master import MasterOptions

    return MasterOptions(
        in_place=True,
        intensity=options.intensity,
        limiter=options.limiter,
        loudness_lufs=loudness_lufs,
        ceiling_dbtp=(
            options.true_peak_dbtp if options.true_peak_dbtp is not None else DEFAULT_TRUE_PEAK_DBTP
        ),
    )


def master_files(request: MasteringRequest, on_progress: ProgressCallback) -> MasteringOutcome:
    """Master ``request``'s files; typed errors only (a full work directory included:
    ``OutOfDisk``, whichever write found it)."""
    try:
        return _master_files(request, on_progress)
    except OSError as exc:
        if is_out_of_disk(exc):
            raise OutOfDisk() from exc
        raise


def _master_files(request: MasteringRequest, on_progress: ProgressCallback) -> MasteringOutcome:
    # Heavy imports here, not at module import: the handler module must load fast.
    from mastering.audio.decode import decode_audio
    from mastering.delivery import Measurement, deliver
    from mastering.engine.true_peak import to_db
    from mastering.track import Track

    on_progress(Stage.DECODING, 10)
    if (
        request.reference is not None
        and request.reference_profile is None
        and _same_file_content(request.target, request.reference)
    ):
        raise IdenticalInputs("The target and the reference are the same file")

    # The reference first: it is analysed and dropped before the target is decoded.
    profile = _reference_profile(request)
    target = decode_audio(
        request.target,
        request.work_dir,
        role="target",
        max_duration_s=request.max_duration_s,
        ffmpeg_path=request.ffmpeg_path,
    )
    validate_for_mastering(target, role="target", min_duration_s=request.min_duration_s)
    if _same_audio(target, profile):
        raise IdenticalInputs("The target and the reference are the same audio")

    options = request.options
    warnings: list[JobWarning] = []
    loudness = options.loudness_lufs
    true_peak_limiter = options.limiter is Limiter.TRUE_PEAK
    if true_peak_limiter and loudness is None:
        loudness = profile.lufs
        if loudness is None:
            warnings.append(
                JobWarning(
                    WarningCode.REFERENCE_LOUDNESS_UNKNOWN,
                    "The reference is too quiet to measure its loudness; the master "
                    "follows its level as matchering would",
                )
            )

    on_progress(Stage.ANALYZING, 20)
    duration_s = target.duration_s
    # In place: the master overwrites the decoded target, so the track is held once.
    result = master_track(target, profile, _engine_options(options, loudness), on_progress)
    del target
    if true_peak_limiter:
        options = options.with_loudness_lufs(
            result.loudness_target_lufs if loudness is None else loudness
        )
    if not result.loudness_reached and result.result_lufs is not None:
        warnings.append(
            JobWarning(
                WarningCode.LOUDNESS_NOT_REACHED,
                f"The master reaches {result.result_lufs:.1f} LUFS, not the "
                f"{options.loudness_lufs:.1f} LUFS asked: louder, under a "
                f"{options.true_peak_dbtp:g} dBTP ceiling, would take so much limiting "
                "that the track would sound squashed",
            )
        )

    on_progress(Stage.ENCODING, 80)
    master = Measurement(lufs=result.result_lufs, true_peak_dbtp=to_db(result.true_peak))
    written = deliver(
        Track(result.samples, result.sample_rate),
        request.outputs,
        request.work_dir,
        measured=master,
        ceiling_dbtp=options.true_peak_dbtp if true_peak_limiter else None,
        dither=true_peak_limiter,
        ffmpeg_path=request.ffmpeg_path,
    )
    metrics: dict[str, float | None] = {
        "duration_s": _rounded(duration_s, 3),
        "target_lufs": _rounded(result.target_lufs),
        "reference_lufs": _rounded(profile.lufs),
        "result_lufs": _rounded(master.lufs),
        "result_true_peak_dbtp": _rounded(master.true_peak_dbtp),
    }
    return MasteringOutcome(
        files={fmt: output.path for fmt, output in written.items()},
        metrics=metrics,
        reference_profile=profile,
        options=options,
        measurements={
            fmt: FileMeasurement(
                lufs=_rounded(output.measurement.lufs),
                true_peak_dbtp=_rounded(output.measurement.true_peak_dbtp),
            )
            for fmt, output in written.items()
        },
        warnings=tuple(warnings),
    )
