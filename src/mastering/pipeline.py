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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastering.engine.profile import ReferenceProfile
from mastering.errors import (
    IdenticalInputs,
    JobWarning,
    OutOfDisk,
    UnknownPreset,
    WarningCode,
    is_out_of_disk,
)
from mastering.formats import OutputFormat, Preview, ResultName
from mastering.jobs.model import JobMode, Stage
from mastering.options import DEFAULT_TRUE_PEAK_DBTP, Limiter, MasteringOptions
from mastering.presets import find_preset
from mastering.validation import validate_for_mastering

if TYPE_CHECKING:
    from mastering.engine.master import MasterOptions, MasterResult
    from mastering.engine.track_analysis import TrackAnalysis
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
    mode: JobMode = JobMode.MASTER
    # Also write the two previews (always, in preview mode).
    previews: bool = False


@dataclass(frozen=True)
class FileMeasurement:
    """A written result as its listener gets it (an MP3 measured decoded)."""

    lufs: float | None
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class MasteringOutcome:
    files: dict[ResultName, Path]
    metrics: dict[str, float | None]
    # The profile the target was mastered against, for the caller to cache.
    reference_profile: ReferenceProfile | None = None
    # The options as applied: loudness_lufs is always a number here unless the
    # matchering limiter chose the level.
    options: MasteringOptions = field(default_factory=MasteringOptions)
    measurements: dict[ResultName, FileMeasurement] = field(default_factory=dict)
    warnings: tuple[JobWarning, ...] = ()
    # The job's ``analysis`` (DESIGN "Previews and modes"), public form.
    analysis: dict[str, Any] | None = None


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
    """Import the engine's modules (numpy, soundfile, scipy's FFTs; ~0.15 s).

    Called in the master function before it forks its worker: the forked child
    inherits them, so only the first job of a container pays the import.
    """
    import mastering.audio.decode
    import mastering.delivery
    import mastering.engine.master
    import mastering.engine.preset_audio  # noqa: F401
    from mastering.engine import fft

    fft.load()


# How far both previews sit under the master (see _deliver_previews).
PREVIEW_HEADROOM_DB = 1.0

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
    """Decode, validate and analyse a reference file (typed errors name the reference);
    the profile carries the reference's meters too (``analysis.reference``)."""
    from mastering.audio.decode import decode_audio
    from mastering.engine.analysis import analyze
    from mastering.engine.track_analysis import analyze_track

    reference = decode_audio(
        path, work_dir, role="reference", max_duration_s=max_duration_s, ffmpeg_path=ffmpeg_path
    )
    validate_for_mastering(reference, role="reference", min_duration_s=min_duration_s)
    return analyze(reference, meters=analyze_track(reference))


def _reference_profile(request: MasteringRequest) -> ReferenceProfile:
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
    return _preset_profile(preset.id)


@cache
def _preset_profile(preset_id: str) -> ReferenceProfile:
    """A preset's profile with the meters of its rendered reference (what the preset
    aims at: ``analysis.reference`` of a preset job), once per process."""
    from mastering.engine.preset_audio import preset_profile, render_preset
    from mastering.engine.track_analysis import analyze_track

    preset = find_preset(preset_id)
    if preset is None:
        raise UnknownPreset(f"There is no preset '{preset_id}'")
    meters = analyze_track(render_preset(preset)).to_public()
    return dataclasses.replace(preset_profile(preset), analysis=meters)


def _same_audio(target: Track, profile: ReferenceProfile) -> bool:
    from mastering.engine.analysis import audio_fingerprint
    from mastering.track import sample_peak

    shape = (target.sample_rate, target.frames, target.channels)
    if shape != (profile.sample_rate, profile.frames, profile.channels):
        return False
    # The same samples have the same largest one (the profile's ``peak``, by the same
    # function): a tenth of the cost of hashing them, which only a tie then needs.
    if sample_peak(target.samples) != profile.peak:
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
    from mastering.engine.track_analysis import analyze_track

    on_progress(Stage.DECODING, 10)
    if request.mode is JobMode.ANALYZE:
        return _analyze_only(request, on_progress)
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

    on_progress(Stage.ANALYZING, 15)
    excerpts = _preview_excerpts(request, target)
    if request.mode is JobMode.PREVIEW and excerpts is not None:
        # Only the window is mastered, and measured before and after: the rest of the
        # target is dropped unmastered and unmeasured.
        target = excerpts.cut(target)
    # Before mastering, which overwrites the target in place.
    target_analysis = analyze_track(target)
    return _master_and_deliver(request, profile, target, target_analysis, excerpts, on_progress)


@dataclass
class _Excerpts:
    """The preview window, and the target's own excerpt cut before mastering."""

    window: slice
    original: Track

    def cut(self, track: Track) -> Track:
        from mastering.track import Track

        return Track(track.samples[self.window].copy(), track.sample_rate)


def _preview_excerpts(request: MasteringRequest, target: Track) -> _Excerpts | None:
    from mastering.engine.preview import loudest_window
    from mastering.track import Track

    if not request.previews and request.mode is not JobMode.PREVIEW:
        return None
    window = loudest_window(target.samples, target.sample_rate)
    original = Track(target.samples[window].copy(), target.sample_rate)
    return _Excerpts(window=window, original=original)


def _master_and_deliver(
    request: MasteringRequest,
    profile: ReferenceProfile,
    target: Track,
    target_analysis: TrackAnalysis,
    excerpts: _Excerpts | None,
    on_progress: ProgressCallback,
) -> MasteringOutcome:
    from mastering.delivery import Measurement, deliver
    from mastering.engine.track_analysis import analysis_document
    from mastering.engine.true_peak import to_db
    from mastering.track import Track

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

    on_progress(Stage.ENCODING, 78)
    mastered = Track(result.samples, result.sample_rate)
    # The engine analysed its result as it wrote it.
    result_analysis = result.analysis
    master = Measurement(lufs=result.result_lufs, true_peak_dbtp=to_db(result.true_peak))
    ceiling = options.true_peak_dbtp if true_peak_limiter else None
    files: dict[ResultName, Path] = {}
    measurements: dict[ResultName, FileMeasurement] = {}
    if excerpts is not None:
        # Cut before the outputs are written: holding an MP3 under its ceiling may
        # limit the master's samples again.
        in_preview = excerpts.window if request.mode is JobMode.MASTER else slice(None)
        preview_result = Track(mastered.samples[in_preview].copy(), mastered.sample_rate)
        delivered = _deliver_previews(excerpts.original, preview_result, request, ceiling=ceiling)
        for name, (path, measurement) in delivered.items():
            files[name] = path
            measurements[name] = measurement
    written = deliver(
        mastered,
        request.outputs,
        request.work_dir,
        measured=master,
        ceiling_dbtp=ceiling,
        dither=true_peak_limiter,
        ffmpeg_path=request.ffmpeg_path,
    )
    for fmt, output in written.items():
        files[fmt] = output.path
        measurements[fmt] = FileMeasurement(
            lufs=_rounded(output.measurement.lufs),
            true_peak_dbtp=_rounded(output.measurement.true_peak_dbtp),
        )
    metrics: dict[str, float | None] = {
        "duration_s": _rounded(duration_s, 3),
        "target_lufs": _rounded(target_analysis.lufs),
        "reference_lufs": _rounded(profile.lufs),
        "result_lufs": _rounded(master.lufs),
        "result_true_peak_dbtp": _rounded(master.true_peak_dbtp),
    }
    analysis = analysis_document(target_analysis, result=result_analysis)
    if profile.analysis is not None:
        analysis = {"reference": profile.analysis, **analysis}
    return MasteringOutcome(
        files=files,
        metrics=metrics,
        reference_profile=profile,
        options=options,
        measurements=measurements,
        warnings=tuple(warnings),
        analysis=analysis,
    )


def _deliver_previews(
    original: Track,
    mastered: Track,
    request: MasteringRequest,
    *,
    ceiling: float | None,
) -> dict[ResultName, tuple[Path, FileMeasurement]]:
    """Both previews as MP3s: the same window, faded, the original brought to the
    master's loudness (DESIGN "Previews")."""
    import numpy as np

    from mastering.delivery import deliver_mp3s_side_by_side
    from mastering.engine.preview import fade_in_place, integrated_lufs, match_loudness_in_place

    aim = integrated_lufs(mastered.samples, mastered.sample_rate)
    ceiling_dbtp = ceiling if ceiling is not None else DEFAULT_TRUE_PEAK_DBTP
    if aim is not None:
        match_loudness_in_place(original.samples, original.sample_rate, aim, ceiling_dbtp)
    # Both a little under the master: an MP3 decodes a few tenths of a dB over its
    # source's true peak, and this headroom spares the second encode that holding the
    # ceiling would otherwise take (the same gain on both keeps the A/B level-matched).
    headroom = np.float32(10.0 ** (-PREVIEW_HEADROOM_DB / 20.0))
    np.multiply(original.samples, headroom, out=original.samples)
    np.multiply(mastered.samples, headroom, out=mastered.samples)

    names = (Preview.TARGET, Preview.RESULT)
    jobs = []
    for name, excerpt in zip(names, (original, mastered), strict=True):
        fade_in_place(excerpt.samples, excerpt.sample_rate)
        folder = request.work_dir / str(name)
        folder.mkdir(exist_ok=True)
        jobs.append((excerpt, folder))
    written = deliver_mp3s_side_by_side(
        jobs, ceiling_dbtp=ceiling_dbtp, ffmpeg_path=request.ffmpeg_path
    )
    return {
        name: (
            file.path,
            FileMeasurement(
                lufs=_rounded(file.measurement.lufs),
                true_peak_dbtp=_rounded(file.measurement.true_peak_dbtp),
            ),
        )
        for name, file in zip(names, written, strict=True)
    }


def _analyze_only(request: MasteringRequest, on_progress: ProgressCallback) -> MasteringOutcome:
    """``mode: analyze``: measure the target (and the reference, if given); render nothing."""
    from mastering.audio.decode import decode_audio
    from mastering.engine.track_analysis import analysis_document, analyze_track

    measured = {}
    duration_s = 0.0
    for role, path in (("target", request.target), ("reference", request.reference)):
        if path is None:
            continue
        track = decode_audio(
            path,
            request.work_dir,
            role=role,
            max_duration_s=request.max_duration_s,
            ffmpeg_path=request.ffmpeg_path,
        )
        validate_for_mastering(track, role=role, min_duration_s=request.min_duration_s)
        on_progress(Stage.ANALYZING, 30 if role == "target" else 60)
        if role == "target":
            duration_s = track.duration_s
        measured[role] = analyze_track(track)
        del track
    target = measured["target"]
    reference = measured.get("reference")
    analysis: dict[str, Any] = analysis_document(target, reference=reference)
    reference_lufs = reference.lufs if reference else None
    cached = request.reference_profile
    if reference is None and cached is not None and cached.analysis is not None:
        # A reference measured by an earlier job of this owner (the profile cache).
        analysis = {"reference": cached.analysis, **analysis}
        reference_lufs = cached.lufs
    return MasteringOutcome(
        files={},
        metrics={
            "duration_s": _rounded(duration_s, 3),
            "target_lufs": _rounded(target.lufs),
            "reference_lufs": _rounded(reference_lufs),
        },
        analysis=analysis,
    )
