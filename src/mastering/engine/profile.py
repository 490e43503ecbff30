"""What the engine keeps of a reference: a small, versioned, serialisable profile.

matchering uses a reference only through a few numbers derived from its loudest
pieces: their average mid and side magnitude spectra, their RMS, and how much the
reference had to be normalised. A profile holds exactly those (plus loudness and a
fingerprint), so one analysis serves every job mastered against the same reference.

No numpy here: the master function imports this module at load time to read cached
profiles, and must stay fast to import.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mastering.engine.params import FFT_SIZE, INTERNAL_RATE, SPECTRUM_BINS
from mastering.versions import ENGINE_VERSION

PROFILE_FORMAT: Final = "spectrum-reference-profile"
_SPECTRUM_DTYPE = "<f8"


class ProfileError(ValueError):
    """Bytes that are not a usable reference profile (malformed or another version)."""


class ProfileVersionMismatch(ProfileError):
    """A well-formed profile written by another engine version: analyse again."""


@dataclass(frozen=True)
class ReferenceProfile:
    """A reference track as the engine sees it.

    Spectra and ``match_rms`` are those of the reference *after* matchering's peak
    normalisation, measured at 44.1 kHz on its loudest 15-second pieces.
    """

    # Linear-magnitude average spectra (FFT_SIZE // 2 + 1 bins, 0..22050 Hz).
    mid_spectrum: tuple[float, ...]
    side_spectrum: tuple[float, ...]
    # RMS of the loudest pieces' mid channel: the level the target is brought to.
    match_rms: float
    # <= 1: how much the final master is scaled down for a reference peaking lower.
    amplitude_coefficient: float
    # The decoded reference: its own rate, channels, length, loudness and peak.
    sample_rate: int
    channels: int
    frames: int
    lufs: float | None
    peak: float
    # sha256 of the decoded reference (rate, shape and float32 samples): lets a job
    # with a cached profile still refuse a target that is the same audio.
    fingerprint: str
    engine_version: str = ENGINE_VERSION
    # The reference's meters as a job's ``analysis.reference`` shows them
    # (``TrackAnalysis.to_public()``), kept so a job with a cached profile still has
    # them; None in profiles stored before analysis existed.
    analysis: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("mid_spectrum", "side_spectrum"):
            spectrum = getattr(self, name)
            if len(spectrum) != SPECTRUM_BINS:
                raise ProfileError(f"{name} needs {SPECTRUM_BINS} bins, not {len(spectrum)}")
            if not all(math.isfinite(v) and v >= 0.0 for v in spectrum):
                raise ProfileError(f"{name} must be finite and non-negative")
        if not (math.isfinite(self.match_rms) and math.isfinite(self.peak)):
            raise ProfileError("match_rms and peak must be finite")
        if self.match_rms < 0.0 or self.peak < 0.0:
            raise ProfileError("match_rms and peak cannot be negative")
        if not 0.0 < self.amplitude_coefficient <= 1.0:
            raise ProfileError("amplitude_coefficient must be in (0, 1]")
        if self.sample_rate <= 0 or self.channels <= 0 or self.frames <= 0:
            raise ProfileError("sample_rate, channels and frames must be positive")
        if self.lufs is not None and not math.isfinite(self.lufs):
            raise ProfileError("lufs must be finite or None")

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def to_bytes(self) -> bytes:
        """Compact JSON (UTF-8). Spectra are base64 little-endian float64: exact."""
        document = {
            "format": PROFILE_FORMAT,
            "engine_version": self.engine_version,
            "analysis_rate": INTERNAL_RATE,
            "fft_size": FFT_SIZE,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frames": self.frames,
            "lufs": self.lufs,
            "peak": self.peak,
            "match_rms": self.match_rms,
            "amplitude_coefficient": self.amplitude_coefficient,
            "fingerprint": self.fingerprint,
            "mid_spectrum": _pack(self.mid_spectrum),
            "side_spectrum": _pack(self.side_spectrum),
            "analysis": self.analysis,
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        """Parse ``to_bytes`` output; ProfileVersionMismatch for another engine version."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError("not a reference profile (invalid JSON)") from exc
        if not isinstance(document, dict) or document.get("format") != PROFILE_FORMAT:
            raise ProfileError("not a reference profile")
        version = document.get("engine_version")
        if version != ENGINE_VERSION:
            raise ProfileVersionMismatch(f"profile of engine {version!r}, not {ENGINE_VERSION!r}")
        try:
            lufs = document["lufs"]
            return cls(
                mid_spectrum=_unpack(document["mid_spectrum"]),
                side_spectrum=_unpack(document["side_spectrum"]),
                match_rms=float(document["match_rms"]),
                amplitude_coefficient=float(document["amplitude_coefficient"]),
                sample_rate=_integer(document["sample_rate"]),
                channels=_integer(document["channels"]),
                frames=_integer(document["frames"]),
                lufs=None if lufs is None else float(lufs),
                peak=float(document["peak"]),
                fingerprint=str(document["fingerprint"]),
                engine_version=version,
                analysis=_analysis(document.get("analysis")),
            )
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"malformed reference profile: {exc}") from exc


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes: with ENGINE_VERSION, the key of a cached profile."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _pack(values: tuple[float, ...]) -> dict[str, str]:
    raw = struct.pack(f"<{len(values)}d", *values)
    return {"dtype": _SPECTRUM_DTYPE, "base64": base64.b64encode(raw).decode("ascii")}


def _unpack(field: Any) -> tuple[float, ...]:
    if not isinstance(field, dict) or field.get("dtype") != _SPECTRUM_DTYPE:
        raise ProfileError("spectra must be base64 little-endian float64")
    raw = base64.b64decode(str(field["base64"]), validate=True)
    if len(raw) % 8:
        raise ProfileError("spectrum byte length is not a multiple of 8")
    return struct.unpack(f"<{len(raw) // 8}d", raw)


def _analysis(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("bands_db"), list):
        raise ProfileError("analysis must be an object with bands_db")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"expected an integer, got {value!r}")
    return value
