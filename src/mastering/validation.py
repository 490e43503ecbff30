"""What makes a decoded track worth mastering: long enough and not silent.

The longest accepted track is decoding's business (``audio.decode`` refuses an
over-long file from its header, before reading its samples); this module holds the
rest of the policy, and how a limit is said to a person.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mastering.errors import AudioTooShort, SilentAudio

if TYPE_CHECKING:
    # Types only: the pipeline imports this module at load, numpy when it runs.
    from mastering.track import Track

# Dither and hum stay below this; anything quieter is digital silence.
SILENCE_DBFS = -80.0


def validate_for_mastering(track: Track, *, role: str, min_duration_s: float) -> None:
    """Refuse a track that decoded fine but cannot be mastered: too short or silent."""
    if track.duration_s < min_duration_s:
        raise AudioTooShort(
            f"The {role} is {track.duration_s:.2f} seconds long; "
            f"it must be at least {format_duration(min_duration_s)}"
        )
    peak = track.peak()
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
