"""Mastering of local files: decode → validate → match → encode → measure.

The one pipeline behind the master function and the command-line tools. It
knows nothing of S3 or jobs; progress goes through a callback and failures are
typed errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mastering.errors import IdenticalInputs, UnknownPreset
from mastering.formats import OUTPUT_SPECS, OutputFormat
from mastering.jobs.model import Stage
from mastering.presets import get_preset

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


@dataclass(frozen=True)
class MasteringOutcome:
    files: dict[OutputFormat, Path]
    metrics: dict[str, float | None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _rounded(value: float | None, digits: int = 2) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value, digits)


def preload_engine() -> None:
    """Import the engine's heavy modules (about 2 s, mostly matchering's statsmodels).

    Called in the master function before it forks its worker: the forked child
    inherits them, so only the first job of a container pays the import.
    """
    import mastering.audio.decode
    import mastering.audio.encode
    import mastering.audio.measure
    import mastering.engine.matchering_adapter
    import mastering.engine.preset_audio  # noqa: F401


def master_files(request: MasteringRequest, on_progress: ProgressCallback) -> MasteringOutcome:
    # Heavy imports here, not at module import: the handler module must load fast.
    import numpy as np

    from mastering.audio.decode import decode_audio, validate_for_mastering
    from mastering.audio.encode import encode
    from mastering.audio.measure import integrated_lufs, true_peak_dbtp
    from mastering.engine.matchering_adapter import match_to_reference
    from mastering.engine.preset_audio import render_preset

    on_progress(Stage.DECODING, 10)
    if request.reference is not None and _sha256(request.target) == _sha256(request.reference):
        raise IdenticalInputs("The target and the reference are the same file")

    target = decode_audio(
        request.target,
        request.work_dir,
        role="target",
        max_duration_s=request.max_duration_s,
        ffmpeg_path=request.ffmpeg_path,
    )
    validate_for_mastering(
        target,
        role="target",
        min_duration_s=request.min_duration_s,
        max_duration_s=request.max_duration_s,
    )
    if request.reference is not None:
        reference = decode_audio(
            request.reference,
            request.work_dir,
            role="reference",
            max_duration_s=request.max_duration_s,
            ffmpeg_path=request.ffmpeg_path,
        )
        validate_for_mastering(
            reference,
            role="reference",
            min_duration_s=request.min_duration_s,
            max_duration_s=request.max_duration_s,
        )
    else:
        preset = get_preset(request.preset_id or "")
        if preset is None:
            raise UnknownPreset(f"There is no preset '{request.preset_id}'")
        reference = render_preset(preset)

    if (
        target.samples.shape == reference.samples.shape
        and target.sample_rate == reference.sample_rate
        and np.array_equal(target.samples, reference.samples)
    ):
        raise IdenticalInputs("The target and the reference are the same audio")

    on_progress(Stage.ANALYZING, 20)
    target_lufs = integrated_lufs(target.samples, target.sample_rate)
    reference_lufs = integrated_lufs(reference.samples, reference.sample_rate)
    duration_s = target.duration_s

    on_progress(Stage.MATCHING, 30)
    mastered, rate = match_to_reference(
        target,
        reference,
        work_dir=request.work_dir,
        max_duration_s=request.max_duration_s,
        on_stage=on_progress,
    )
    del target, reference

    on_progress(Stage.ENCODING, 80)
    files: dict[OutputFormat, Path] = {}
    for fmt in request.outputs:
        files[fmt] = encode(
            mastered,
            rate,
            fmt,
            request.work_dir / f"out-{OUTPUT_SPECS[fmt].object_name}",
            ffmpeg_path=request.ffmpeg_path,
        )
    metrics: dict[str, float | None] = {
        "duration_s": _rounded(duration_s, 3),
        "target_lufs": _rounded(target_lufs),
        "reference_lufs": _rounded(reference_lufs),
        "result_lufs": _rounded(integrated_lufs(mastered, rate)),
        "result_true_peak_dbtp": _rounded(true_peak_dbtp(mastered, rate)),
    }
    return MasteringOutcome(files=files, metrics=metrics)
