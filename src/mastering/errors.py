"""Typed errors of the service.

Every failure a client can act on is one of these. The HTTP layer maps them to a
status and ``{"error": {"code", "message"}}`` in one place; the master function
stores ``code``/``message`` on the failed job. Messages are written for the end
user: they never carry paths, stack traces or internal names.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    UNSUPPORTED_FORMAT = "unsupported_format"
    FILE_TOO_LARGE = "file_too_large"
    UNKNOWN_PRESET = "unknown_preset"
    INVALID_AUDIO = "invalid_audio"
    AUDIO_TOO_SHORT = "audio_too_short"
    AUDIO_TOO_LONG = "audio_too_long"
    IDENTICAL_INPUTS = "identical_inputs"
    SILENT_AUDIO = "silent_audio"
    UPLOAD_MISSING = "upload_missing"
    UPLOAD_EXPIRED = "upload_expired"
    PROCESSING_TIMEOUT = "processing_timeout"
    JOB_FINISHED = "job_finished"
    TOO_MANY_JOBS = "too_many_jobs"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class MasteringError(Exception):
    """Base of every error that ends up in front of a client."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}


class InvalidRequest(MasteringError):
    code = ErrorCode.INVALID_REQUEST
    http_status = 400


class Unauthorized(MasteringError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401


class JobNotFound(MasteringError):
    code = ErrorCode.NOT_FOUND
    http_status = 404


class UnsupportedFormat(MasteringError):
    code = ErrorCode.UNSUPPORTED_FORMAT
    http_status = 415


class FileTooLarge(MasteringError):
    code = ErrorCode.FILE_TOO_LARGE
    http_status = 413


class UnknownPreset(MasteringError):
    code = ErrorCode.UNKNOWN_PRESET
    http_status = 400


class InvalidAudio(MasteringError):
    code = ErrorCode.INVALID_AUDIO
    http_status = 422


class AudioTooShort(MasteringError):
    code = ErrorCode.AUDIO_TOO_SHORT
    http_status = 422


class AudioTooLong(MasteringError):
    code = ErrorCode.AUDIO_TOO_LONG
    http_status = 422


class IdenticalInputs(MasteringError):
    code = ErrorCode.IDENTICAL_INPUTS
    http_status = 422


class SilentAudio(MasteringError):
    code = ErrorCode.SILENT_AUDIO
    http_status = 422


class UploadMissing(MasteringError):
    code = ErrorCode.UPLOAD_MISSING
    http_status = 409


class UploadExpired(MasteringError):
    code = ErrorCode.UPLOAD_EXPIRED
    http_status = 410


class ProcessingTimeout(MasteringError):
    code = ErrorCode.PROCESSING_TIMEOUT
    http_status = 504


class JobFinished(MasteringError):
    """Cancel of a job that has already ended."""

    code = ErrorCode.JOB_FINISHED
    http_status = 409


class TooManyJobs(MasteringError):
    """The owner already has as many live jobs as the deployment allows."""

    code = ErrorCode.TOO_MANY_JOBS
    http_status = 429


class JobCancelled(MasteringError):
    """The job was cancelled while it was being processed: the worker stops, publishes
    nothing, and leaves the job as the cancel request wrote it."""

    code = ErrorCode.CANCELLED
    http_status = 409


class InternalError(MasteringError):
    code = ErrorCode.INTERNAL_ERROR
    http_status = 500


OUT_OF_DISK_MESSAGE = (
    "The service ran out of temporary disk space while working on this track; try again later"
)


class OutOfDisk(InternalError):
    """The work directory filled up (ENOSPC): our capacity, not the user's file, so an
    ``internal_error`` that says so rather than a decoder's complaint."""

    def __init__(self, message: str = OUT_OF_DISK_MESSAGE) -> None:
        super().__init__(message)


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_out_of_disk(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a full file system."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_BY_CODE: dict[ErrorCode, type[MasteringError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        JobNotFound,
        UnsupportedFormat,
        FileTooLarge,
        UnknownPreset,
        InvalidAudio,
        AudioTooShort,
        AudioTooLong,
        IdenticalInputs,
        SilentAudio,
        UploadMissing,
        UploadExpired,
        ProcessingTimeout,
        JobFinished,
        TooManyJobs,
        JobCancelled,
        InternalError,
    )
}


def error_from_code(code: str, message: str) -> MasteringError:
    """Rebuild a typed error from its wire form (e.g. sent back by a worker process)."""
    try:
        return _BY_CODE[ErrorCode(code)](message)
    except (ValueError, KeyError):
        return InternalError(message)


class WarningCode(StrEnum):
    """Things a job did not fully achieve although it succeeded."""

    LOUDNESS_NOT_REACHED = "loudness_not_reached"
    REFERENCE_LOUDNESS_UNKNOWN = "reference_loudness_unknown"


@dataclass(frozen=True)
class JobWarning:
    """A succeeded job's note to its client, e.g. a loudness it could not reach."""

    code: WarningCode
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}
