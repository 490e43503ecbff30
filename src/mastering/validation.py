"""What makes a decoded track worth mastering: real samples, long enough, not silent.

The longest accepted track is decoding's business (``audio.decode`` refuses an
over-long file from its header, before reading its samples); this module holds the
rest of the policy, and how a limit is said to a person.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mastering.errors import AudioTooShort, InvalidAudio, SilentAudio

if TYPE_CHECKING:
    # Types only: the pipeline imports this module at load, numpy when it runs.
    from mastering.track import Track

# Dither and hum stay below this; anything quieter is digital silence.
SILENCE_DBFS = -80.0
# Float files may hold samples over full scale: a mix bus that clipped in a DAW
# reaches +10 to +20 dBFS, and such a file masters fine. A thousand times full scale
# is no mix but a scaling mistake (integer values written as floats sit near
# +90 dBFS) or a crafted file, and the engine's meters, which square samples in
# float32, would overflow on it.
MAX_PEAK_DBFS = 60.0
_MAX_PEAK = 10.0 ** (MAX_PEAK_DBFS / 20.0)


def check_samples(track: Track, *, role: str) -> None:
    """Refuse samples no master can be made from: NaN or infinite, or far beyond full
    scale. One scan in blocks; it stops at the first NaN or infinity."""
    _refuse_impossible(track.peak(), role=role)


def _refuse_impossible(peak: float, *, role: str) -> None:
    if not math.isfinite(peak):
        raise InvalidAudio(f"The {role} contains invalid samples (NaN or infinity)")
    if peak > _MAX_PEAK:
        raise InvalidAudio(
            f"The {role} has samples far beyond full scale (peak "
            f"{20.0 * math.log10(peak):+.0f} dBFS); export it normalised, peaking at or "
            "below 0 dBFS, and upload it again"
        )


def validate_for_mastering(track: Track, *, role: str, min_duration_s: float) -> None:
    """Refuse a track that cannot be mastered: too short, silent, or (as
    ``check_samples``) with impossible samples."""
    if track.duration_s < min_duration_s:
        raise AudioTooShort(
            f"The {role} is {track.duration_s:.2f} seconds long; "
            f"it must be at least {format_duration(min_duration_s)}"
        )
    peak = track.peak()
    _refuse_impossible(peak, role=role)
    if peak <= 0.0 or 20.0 * math.log10(peak) < SILENCE_DBFS:
        raise SilentAudio(f"The {role} is silent")


def format_duration(seconds: float) -> str:
    """A limit as a person says it: "15 minutes", "1 minute 30 seconds", "0.5 seconds"."""
    whole_minutes, rest = divmod(seconds, 60.0)
    minutes = int(whole_minutes)
    parts: list[str] = []
    if minutes:
        parts.append(f"{minutes} minute{'' if minutes == 1 else 's'}")
    if rest or not minutes:
        parts.append(f"{rest:g} second{'' if rest == 1 else 's'}")
    return " ".join(parts)
