"""The preset catalogue.

A preset stands in for a reference track. matchering matches the target's average
mid/side spectrum and loudness to those of the reference's loudest passages, so a
preset is fully described by a spectral shape, a loudness and a stereo width; the
engine renders it as a deterministic shaped-noise reference
(``mastering.engine.preset_audio``). No copyrighted audio ships with the service.

No numpy here: the presign function lists presets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mastering.options import PresetDefaults


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    description: str
    # Spectral slope of the mid channel, in dB per octave (pink noise is -3).
    tilt_db_per_octave: float
    # Shelves relative to the tilt: gain below ``low_shelf_hz`` / above ``high_shelf_hz``.
    low_shelf_db: float
    high_shelf_db: float
    # RMS of the loudest passages in dBFS: how loud the master ends up.
    rms_dbfs: float
    # Side level relative to mid, in dB: stereo width.
    side_db: float
    # What a job with this preset aims for unless the client says otherwise.
    loudness_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    # Share of the preset's EQ applied by default (Flat: 0, the target's own balance).
    intensity: float = 1.0
    low_shelf_hz: float = 150.0
    high_shelf_hz: float = 6000.0

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "loudness_lufs": self.loudness_lufs,
            "true_peak_dbtp": self.true_peak_dbtp,
        }

    def defaults(self) -> PresetDefaults:
        return PresetDefaults(
            loudness_lufs=self.loudness_lufs,
            true_peak_dbtp=self.true_peak_dbtp,
            intensity=self.intensity,
        )


PRESETS: dict[str, Preset] = {
    preset.id: preset
    for preset in (
        Preset(
            id="balanced",
            name="Balanced",
            description="Even, modern tonal balance at a streaming-friendly loudness.",
            tilt_db_per_octave=-4.5,
            low_shelf_db=0.0,
            high_shelf_db=0.0,
            rms_dbfs=-12.0,
            side_db=-9.0,
        ),
        Preset(
            id="warm",
            name="Warm",
            description="Fuller lows and softer highs, for vocals and acoustic material.",
            tilt_db_per_octave=-5.0,
            low_shelf_db=2.5,
            high_shelf_db=-2.5,
            rms_dbfs=-13.0,
            side_db=-10.0,
        ),
        Preset(
            id="bright",
            name="Bright",
            description="Open, airy top end with a tighter low end.",
            tilt_db_per_octave=-4.0,
            low_shelf_db=-1.5,
            high_shelf_db=2.5,
            rms_dbfs=-12.0,
            side_db=-8.0,
        ),
        Preset(
            id="loud",
            name="Loud",
            description="Dense and loud, for club and electronic releases.",
            tilt_db_per_octave=-4.5,
            low_shelf_db=1.5,
            high_shelf_db=1.0,
            rms_dbfs=-9.0,
            side_db=-9.0,
        ),
        Preset(
            id="gentle",
            name="Gentle",
            description="Light touch with headroom and dynamics kept, for classical and jazz.",
            tilt_db_per_octave=-4.5,
            low_shelf_db=0.0,
            high_shelf_db=0.0,
            rms_dbfs=-17.0,
            side_db=-10.0,
        ),
    )
}


def _lookup_key(text: str) -> str:
    # "Hip-Hop", "hip hop", "HIP_HOP" and "hip-hop" are the same preset.
    return re.sub(r"[\s_-]+", "-", text.strip().lower())


_BY_KEY: dict[str, Preset] = {
    key: preset
    for preset in PRESETS.values()
    for key in (_lookup_key(preset.id), _lookup_key(preset.name))
}


def find_preset(id_or_name: str) -> Preset | None:
    """The preset with this id or display name, in any case; None if there is none."""
    return _BY_KEY.get(_lookup_key(id_or_name))


def get_preset(preset_id: str) -> Preset | None:
    return find_preset(preset_id)
