"""What the service accepts and what it produces.

Kept free of numpy so the presign function can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath


class OutputFormat(StrEnum):
    WAV16 = "wav16"
    WAV24 = "wav24"
    FLAC = "flac"
    MP3 = "mp3"


@dataclass(frozen=True)
class OutputSpec:
    format: OutputFormat
    object_name: str  # the object under results/{job_id}/
    extension: str
    content_type: str


OUTPUT_SPECS: dict[OutputFormat, OutputSpec] = {
    OutputFormat.WAV16: OutputSpec(OutputFormat.WAV16, "mastered.wav", "wav", "audio/wav"),
    OutputFormat.WAV24: OutputSpec(OutputFormat.WAV24, "mastered-24bit.wav", "wav", "audio/wav"),
    OutputFormat.FLAC: OutputSpec(OutputFormat.FLAC, "mastered.flac", "flac", "audio/flac"),
    OutputFormat.MP3: OutputSpec(OutputFormat.MP3, "mastered.mp3", "mp3", "audio/mpeg"),
}

DEFAULT_OUTPUTS: tuple[OutputFormat, ...] = (OutputFormat.WAV16,)


class Preview(StrEnum):
    """The two 30-second excerpts a job renders with ``previews`` (DESIGN "Previews")."""

    TARGET = "preview_target"
    RESULT = "preview_result"


# A job's results are keyed by these names, the output formats and the previews.
ResultName = OutputFormat | Preview

RESULT_SPECS: dict[ResultName, OutputSpec] = {
    **{name: spec for name, spec in OUTPUT_SPECS.items()},
    Preview.TARGET: OutputSpec(OutputFormat.MP3, "preview-original.mp3", "mp3", "audio/mpeg"),
    Preview.RESULT: OutputSpec(OutputFormat.MP3, "preview-mastered.mp3", "mp3", "audio/mpeg"),
}


def result_name(text: str) -> ResultName:
    """The result a stored key names (``ValueError`` when it names none)."""
    for kind in (OutputFormat, Preview):
        try:
            return kind(text)
        except ValueError:
            continue
    raise ValueError(f"not a result name: {text}")


class InputRole(StrEnum):
    """What an uploaded file is to its job."""

    TARGET = "target"
    REFERENCE = "reference"


class InputKind(StrEnum):
    """Containers the service decodes. Named after the ffmpeg demuxer that reads them."""

    WAV = "wav"
    AIFF = "aiff"
    FLAC = "flac"
    MP3 = "mp3"
    OGG = "ogg"  # Vorbis and Opus
    MP4 = "mp4"  # m4a/aac in an MP4 container
    AAC = "aac"  # raw ADTS


# Content types browsers and apps actually send for these files, mapped to the kind.
INPUT_CONTENT_TYPES: dict[str, InputKind] = {
    "audio/wav": InputKind.WAV,
    "audio/wave": InputKind.WAV,
    "audio/x-wav": InputKind.WAV,
    "audio/vnd.wave": InputKind.WAV,
    "audio/aiff": InputKind.AIFF,
    "audio/x-aiff": InputKind.AIFF,
    "audio/flac": InputKind.FLAC,
    "audio/x-flac": InputKind.FLAC,
    "audio/mpeg": InputKind.MP3,
    "audio/mp3": InputKind.MP3,
    "audio/ogg": InputKind.OGG,
    "audio/opus": InputKind.OGG,
    "audio/vorbis": InputKind.OGG,
    "application/ogg": InputKind.OGG,
    "audio/mp4": InputKind.MP4,
    "audio/m4a": InputKind.MP4,
    "audio/x-m4a": InputKind.MP4,
    "audio/aac": InputKind.AAC,
    "audio/x-aac": InputKind.AAC,
    "audio/aacp": InputKind.AAC,
}

INPUT_EXTENSIONS: dict[str, InputKind] = {
    "wav": InputKind.WAV,
    "wave": InputKind.WAV,
    "aif": InputKind.AIFF,
    "aiff": InputKind.AIFF,
    "aifc": InputKind.AIFF,
    "flac": InputKind.FLAC,
    "mp3": InputKind.MP3,
    "ogg": InputKind.OGG,
    "oga": InputKind.OGG,
    "opus": InputKind.OGG,
    "m4a": InputKind.MP4,
    "mp4": InputKind.MP4,
    "aac": InputKind.AAC,
}


def normalise_content_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def input_kind_for(filename: str, content_type: str) -> InputKind | None:
    """The declared kind of an upload, or None when neither name nor type is audio we take.

    The content type wins when it is specific; ``application/octet-stream`` (what many
    browsers send for .flac or .opus) falls back to the file extension.
    """
    by_type = INPUT_CONTENT_TYPES.get(normalise_content_type(content_type))
    if by_type is not None:
        return by_type
    if normalise_content_type(content_type) not in ("application/octet-stream", ""):
        return None
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower().lstrip(".")
    return INPUT_EXTENSIONS.get(suffix)
