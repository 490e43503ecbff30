"""Mastering options: what a client may choose about loudness, ceiling, EQ and limiter.

The contract (DESIGN.md, "Mastering options"): ``loudness`` is ``"reference"``, a LUFS
number or a streaming platform's id; ``true_peak_dbtp`` the ceiling every output file
keeps, as decoded; ``intensity`` the share of the matched EQ that is applied;
``limiter`` the default true-peak limiter or ``"matchering"``, which reproduces
``matchering.process`` and takes no loudness or ceiling.

Plain Python (no numpy, no pydantic): the presign function validates requests with
the pydantic model in ``service.requests``, which uses the bounds and tables here; the
master function, the CLI and the stdio backend read ``MasteringOptions`` from a job or
build it from their own arguments with ``parse_mastering_options``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from mastering.errors import InvalidRequest


class Limiter(StrEnum):
    TRUE_PEAK = "true_peak"
    MATCHERING = "matchering"


# Integrated loudness each platform normalises playback to (LUFS), as its own
# documentation states it; README "Loudness and peaks" lists the sources.
PLATFORM_LOUDNESS: Final[dict[str, float]] = {
    "spotify": -14.0,
    "apple_music": -16.0,
    "youtube": -14.0,
    "tidal": -14.0,
    "amazon_music": -14.0,
    "deezer": -15.0,
    "podcast": -16.0,
    "ebu_r128": -23.0,
}
PLATFORM_NAMES: Final[dict[str, str]] = {
    "spotify": "Spotify",
    "apple_music": "Apple Music",
    "youtube": "YouTube",
    "tidal": "TIDAL",
    "amazon_music": "Amazon Music",
    "deezer": "Deezer",
    "podcast": "Podcasts (Apple Podcasts)",
    "ebu_r128": "Broadcast (EBU R128)",
}
LOUDNESS_FROM_REFERENCE: Final = "reference"
MIN_LOUDNESS_LUFS: Final = -30.0
MAX_LOUDNESS_LUFS: Final = -5.0
MIN_TRUE_PEAK_DBTP: Final = -9.0
MAX_TRUE_PEAK_DBTP: Final = 0.0
DEFAULT_TRUE_PEAK_DBTP: Final = -1.0
DEFAULT_INTENSITY: Final = 1.0
MASTERING_FIELDS: Final = ("loudness", "true_peak_dbtp", "intensity", "limiter")


def loudness_targets() -> list[dict[str, Any]]:
    """The platform ids a client may give as ``loudness``, as GET /presets lists them."""
    return [
        {"id": key, "name": PLATFORM_NAMES[key], "loudness_lufs": lufs}
        for key, lufs in PLATFORM_LOUDNESS.items()
    ]


@dataclass(frozen=True)
class MasteringOptions:
    """A job's options, resolved at creation: defaults and the preset's own values filled in.

    ``loudness`` is what was asked ("reference", a platform id, or a number);
    ``loudness_lufs`` the number it means, None until a reference is measured (or
    always, with the matchering limiter, which matches RMS as matchering does).
    ``true_peak_dbtp`` is None with the matchering limiter (its ceiling is its own).
    """

    loudness: str | float = LOUDNESS_FROM_REFERENCE
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = DEFAULT_TRUE_PEAK_DBTP
    intensity: float = DEFAULT_INTENSITY
    limiter: Limiter = Limiter.TRUE_PEAK

    def with_loudness_lufs(self, lufs: float | None) -> MasteringOptions:
        return replace(self, loudness_lufs=lufs)

    def to_public(self) -> dict[str, Any]:
        """The resolved options as GET /jobs/{id} and the webhook echo them."""
        return {
            "loudness": self.loudness,
            "loudness_lufs": self.loudness_lufs,
            "true_peak_dbtp": self.true_peak_dbtp,
            "intensity": self.intensity,
            "limiter": str(self.limiter),
        }

    @classmethod
    def from_public(cls, data: Mapping[str, Any]) -> MasteringOptions:
        """Inverse of ``to_public`` (numbers may come back as Decimal or int)."""
        loudness = data.get("loudness", LOUDNESS_FROM_REFERENCE)
        lufs = data.get("loudness_lufs")
        ceiling = data.get("true_peak_dbtp")
        return cls(
            loudness=loudness if isinstance(loudness, str) else float(loudness),
            loudness_lufs=None if lufs is None else float(lufs),
            true_peak_dbtp=None if ceiling is None else float(ceiling),
            intensity=float(data.get("intensity", DEFAULT_INTENSITY)),
            limiter=Limiter(data.get("limiter", Limiter.TRUE_PEAK)),
        )


@dataclass(frozen=True)
class RequestedOptions:
    """What a client sent, each field None when it was left out."""

    loudness: str | float | None = None
    true_peak_dbtp: float | None = None
    intensity: float | None = None
    limiter: Limiter | None = None


@dataclass(frozen=True)
class PresetDefaults:
    """What a preset brings when the client leaves a field out."""

    loudness_lufs: float
    true_peak_dbtp: float
    intensity: float


def _number(value: Any, field: str, low: float, high: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"mastering.{field}: must be a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidRequest(f"mastering.{field}: must be between {low:g} and {high:g}{unit}")
    return number


def loudness_choice(value: Any) -> str | float:
    """A valid ``loudness`` value (platform ids in lower case), or InvalidRequest."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name == LOUDNESS_FROM_REFERENCE or name in PLATFORM_LOUDNESS:
            return name
        try:
            value = float(name)
        except ValueError:
            choices = ", ".join([LOUDNESS_FROM_REFERENCE, *PLATFORM_LOUDNESS])
            raise InvalidRequest(
                f"mastering.loudness: '{value}' is not a loudness; give LUFS "
                f"({MIN_LOUDNESS_LUFS:g} to {MAX_LOUDNESS_LUFS:g}) or one of {choices}"
            ) from None
    return _number(value, "loudness", MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS, " LUFS")


def parse_mastering_options(data: Any) -> RequestedOptions:
    """Validate a ``mastering`` object (JSON-like); InvalidRequest names the bad field."""
    if data is None:
        return RequestedOptions()
    if not isinstance(data, Mapping):
        raise InvalidRequest("mastering: must be an object")
    unknown = sorted(set(data) - set(MASTERING_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"mastering.{unknown[0]}: unknown option; use {', '.join(MASTERING_FIELDS)}"
        )
    loudness = data.get("loudness")
    ceiling = data.get("true_peak_dbtp")
    intensity = data.get("intensity")
    limiter = data.get("limiter")
    chosen_limiter: Limiter | None = None
    if limiter is not None:
        try:
            chosen_limiter = Limiter(str(limiter).strip().lower())
        except ValueError:
            raise InvalidRequest(
                f"mastering.limiter: must be one of {', '.join(str(v) for v in Limiter)}"
            ) from None
    requested = RequestedOptions(
        loudness=None if loudness is None else loudness_choice(loudness),
        true_peak_dbtp=None
        if ceiling is None
        else _number(ceiling, "true_peak_dbtp", MIN_TRUE_PEAK_DBTP, MAX_TRUE_PEAK_DBTP, " dBTP"),
        intensity=None if intensity is None else _number(intensity, "intensity", 0.0, 1.0, ""),
        limiter=chosen_limiter,
    )
    check_limiter_compatible(requested)
    return requested


def check_limiter_compatible(requested: RequestedOptions) -> None:
    if requested.limiter is not Limiter.MATCHERING:
        return
    for field in ("loudness", "true_peak_dbtp"):
        if getattr(requested, field) is not None:
            raise InvalidRequest(
                f"mastering.{field}: the matchering limiter sets its own loudness and "
                "ceiling; leave it out or use limiter 'true_peak'"
            )


def resolve_options(
    requested: RequestedOptions, preset: PresetDefaults | None = None
) -> MasteringOptions:
    """The job's options: the client's values, else the preset's, else the defaults."""
    check_limiter_compatible(requested)
    limiter = requested.limiter or Limiter.TRUE_PEAK
    intensity = requested.intensity
    if intensity is None:
        intensity = preset.intensity if preset is not None else DEFAULT_INTENSITY
    if limiter is Limiter.MATCHERING:
        return MasteringOptions(
            loudness=LOUDNESS_FROM_REFERENCE,
            loudness_lufs=None,
            true_peak_dbtp=None,
            intensity=intensity,
            limiter=limiter,
        )
    ceiling = requested.true_peak_dbtp
    if ceiling is None:
        ceiling = preset.true_peak_dbtp if preset is not None else DEFAULT_TRUE_PEAK_DBTP
    loudness = requested.loudness
    lufs: float | None
    if loudness is None or loudness == LOUDNESS_FROM_REFERENCE:
        # A preset stands in for the reference: "reference" means its own loudness.
        loudness = LOUDNESS_FROM_REFERENCE
        lufs = preset.loudness_lufs if preset is not None else None
    elif isinstance(loudness, str):
        lufs = PLATFORM_LOUDNESS[loudness]
    else:
        lufs = float(loudness)
    return MasteringOptions(
        loudness=loudness,
        loudness_lufs=lufs,
        true_peak_dbtp=ceiling,
        intensity=intensity,
        limiter=limiter,
    )
