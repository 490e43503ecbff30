"""The preset catalogue.

A preset stands in for a reference track. matchering matches the target's average
mid/side spectrum and loudness to those of the reference's loudest passages, so a
preset is fully described by a spectral shape (``Shape``: a tilt, shelves, bells,
band edges and a stereo width) and a loudness; the engine renders it as a
deterministic shaped-noise reference at that loudness
(``mastering.engine.preset_audio``). No copyrighted audio ships with the service.

Because the engine EQs the target *toward* the shape, a preset describes where the
tonal balance ends up, not a fixed boost: "Bass Boost" brings a thin mix's lows up
a lot and an already bass-heavy mix's hardly at all. Descriptions say so in plain
words and claim nothing else (no compression, de-essing or noise removal: the
engine does EQ, gain and peak limiting).

Loudness and ceiling are what a job with the preset aims for unless the client says
otherwise. -1 dBTP is the usual ceiling for lossy streaming (Spotify for Artists,
"Loudness normalization"; Apple Podcasts, "Audio requirements"). Spotify asks masters
louder than its -14 LUFS playback level to stay under -2 dBTP, as louder masters
distort more when encoded, so the presets above -14 LUFS use -2 dBTP.

No numpy here: the presign function lists presets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from mastering.options import (
    MAX_LOUDNESS_LUFS,
    MAX_TRUE_PEAK_DBTP,
    MIN_LOUDNESS_LUFS,
    MIN_TRUE_PEAK_DBTP,
    PresetDefaults,
)

_ID_PATTERN: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class Bell:
    """A peak (``gain_db`` > 0) or dip centred on ``hz``; half the gain is reached
    ``width_octaves / 2`` either side (full width at half gain, in octaves)."""

    hz: float
    gain_db: float
    width_octaves: float = 2.0


@dataclass(frozen=True)
class Shape:
    """A long-term average spectrum, sketched as a mastering engineer would.

    The mid channel's level at frequency f, in dB, is the sum of: a tilt through
    1 kHz (pink noise is -3 dB/octave; commercial music falls somewhat faster), a low
    and a high shelf (half their gain at their corner frequency), any bells, a
    24 dB/octave low cut and a 12 dB/octave high roll-off. The side channel has the
    same shape ``side_db`` lower (stereo width), with its lows rolled off below
    ``side_low_cut_hz`` (12 dB/octave) as a master keeps its bass in mono.
    """

    tilt_db_per_octave: float = -4.5
    low_shelf_db: float = 0.0
    low_shelf_hz: float = 150.0
    high_shelf_db: float = 0.0
    high_shelf_hz: float = 6000.0
    bells: tuple[Bell, ...] = ()
    low_cut_hz: float = 30.0
    high_cut_hz: float = 18000.0
    side_db: float = -9.0
    side_low_cut_hz: float = 120.0


# The neutral balance: Balanced's, and Flat's should a client raise its intensity.
NEUTRAL: Final = Shape()


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    description: str
    shape: Shape
    # What a job with this preset aims for unless the client says otherwise.
    loudness_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    # Share of the preset's EQ applied by default (Flat: 0, the target's own balance).
    intensity: float = 1.0

    def __post_init__(self) -> None:
        # The catalogue is code: a bad entry fails at import, in every test run.
        if not _ID_PATTERN.fullmatch(self.id):
            raise ValueError(f"preset id {self.id!r} must be lower-case words joined by '-'")
        if not MIN_LOUDNESS_LUFS <= self.loudness_lufs <= MAX_LOUDNESS_LUFS:
            raise ValueError(f"preset {self.id}: loudness_lufs out of range")
        if not MIN_TRUE_PEAK_DBTP <= self.true_peak_dbtp <= MAX_TRUE_PEAK_DBTP:
            raise ValueError(f"preset {self.id}: true_peak_dbtp out of range")
        if not 0.0 <= self.intensity <= 1.0:
            raise ValueError(f"preset {self.id}: intensity must be between 0 and 1")

    def to_public(self) -> dict[str, Any]:
        # The shape stays private: it is how the engine renders the preset.
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


# Ordered for a picker: no EQ and the neutral balance first, then broad tonal
# choices, then tone-control style shapes, then genres, then speech.
_CATALOGUE: Final = (
    Preset(
        id="flat",
        name="Flat",
        description=(
            "No EQ: keeps your mix's own tonal balance and stereo width, and only sets "
            "its loudness and peak ceiling."
        ),
        shape=NEUTRAL,
        intensity=0.0,
    ),
    Preset(
        id="balanced",
        name="Balanced",
        description=(
            "Even, neutral tonal balance with the bass kept in mono, at the loudness "
            "streaming services play music at."
        ),
        shape=NEUTRAL,
    ),
    Preset(
        id="warm",
        name="Warm",
        description=(
            "Fuller lows and softer highs (about 2.5 dB each way) with a slightly "
            "narrower image; suits vocals and acoustic material."
        ),
        shape=Shape(
            tilt_db_per_octave=-5.0,
            low_shelf_db=2.5,
            low_shelf_hz=200.0,
            high_shelf_db=-2.5,
            high_shelf_hz=5000.0,
            side_db=-10.0,
        ),
    ),
    Preset(
        id="bright",
        name="Bright",
        description=(
            "More open, airy top end (about +2.5 dB above 6 kHz), slightly leaner lows "
            "and a slightly wider image."
        ),
        shape=Shape(
            tilt_db_per_octave=-4.0,
            low_shelf_db=-1.5,
            high_shelf_db=2.5,
            side_db=-8.0,
        ),
    ),
    Preset(
        id="gentle",
        name="Gentle",
        description=(
            "A light touch: half-strength EQ toward a neutral balance with slightly "
            "softer highs, at a quiet level that leaves room for dynamics."
        ),
        shape=Shape(high_shelf_db=-1.5, high_shelf_hz=8000.0, side_db=-10.0),
        loudness_lufs=-18.0,
        intensity=0.5,
    ),
    Preset(
        id="loud",
        name="Loud",
        description=(
            "Dense and loud, with about 2.5 dB more low end and a little more top; the "
            "limiter works hard, so drums and other transients get softer."
        ),
        shape=Shape(low_shelf_db=2.5, low_shelf_hz=120.0, high_shelf_db=1.5, high_shelf_hz=8000.0),
        # Louder than Spotify's -14 LUFS: -2 dBTP, as for Rock, Hip-Hop and Electronic.
        loudness_lufs=-8.0,
        true_peak_dbtp=-2.0,
    ),
    Preset(
        id="bass-boost",
        name="Bass Boost",
        description="Neutral balance with the lows raised up to about 6 dB below 120 Hz.",
        shape=Shape(low_shelf_db=6.0, low_shelf_hz=120.0),
    ),
    Preset(
        id="treble-boost",
        name="Treble Boost",
        description="Neutral balance with the highs raised up to about 6 dB above 5 kHz.",
        shape=Shape(high_shelf_db=6.0, high_shelf_hz=5000.0),
    ),
    Preset(
        id="v-shape",
        name="V-Shape",
        description=(
            "The classic 'smile' curve: lows and highs up about 4 dB, mids around 1 kHz "
            "down about 3 dB."
        ),
        shape=Shape(
            low_shelf_db=4.0,
            high_shelf_db=4.0,
            bells=(Bell(hz=1000.0, gain_db=-3.0, width_octaves=3.0),),
        ),
    ),
    Preset(
        id="vocal",
        name="Vocal",
        description=(
            "Brings the voice forward: about +3 dB of presence around 3 kHz, a little "
            "less low-mid mud around 300 Hz, a touch of air."
        ),
        shape=Shape(
            high_shelf_db=1.5,
            high_shelf_hz=10000.0,
            bells=(
                Bell(hz=300.0, gain_db=-1.5, width_octaves=1.5),
                Bell(hz=3000.0, gain_db=3.0, width_octaves=2.0),
            ),
        ),
    ),
    Preset(
        id="rock",
        name="Rock",
        description=(
            "Loud, with firmer lows, less boxiness around 400 Hz, more guitar bite around "
            "2.5 kHz and a wider image for the guitars."
        ),
        shape=Shape(
            low_shelf_db=2.0,
            low_shelf_hz=120.0,
            bells=(
                Bell(hz=400.0, gain_db=-1.5, width_octaves=1.5),
                Bell(hz=2500.0, gain_db=2.0, width_octaves=2.0),
            ),
            side_db=-8.0,
        ),
        loudness_lufs=-10.0,
        true_peak_dbtp=-2.0,
    ),
    Preset(
        id="hip-hop",
        name="Hip-Hop",
        description=(
            "Loud, with heavy sub-bass around 55 Hz, a little vocal presence around 3 kHz "
            "and a focused centre over mono lows."
        ),
        shape=Shape(
            low_cut_hz=25.0,
            bells=(
                Bell(hz=55.0, gain_db=5.0, width_octaves=1.5),
                Bell(hz=3000.0, gain_db=1.5, width_octaves=2.0),
            ),
            side_db=-11.0,
            side_low_cut_hz=150.0,
        ),
        loudness_lufs=-9.0,
        true_peak_dbtp=-2.0,
    ),
    Preset(
        id="electronic",
        name="Electronic",
        description=(
            "Loud, with deep sub-bass around 50 Hz, a crisper top above 10 kHz and a wide "
            "image over mono lows."
        ),
        shape=Shape(
            low_cut_hz=25.0,
            high_shelf_db=2.0,
            high_shelf_hz=10000.0,
            bells=(Bell(hz=50.0, gain_db=4.0, width_octaves=1.5),),
            side_db=-7.0,
            side_low_cut_hz=150.0,
        ),
        loudness_lufs=-9.0,
        true_peak_dbtp=-2.0,
    ),
    Preset(
        id="jazz",
        name="Jazz",
        description=(
            "Warm and natural: a little more bass body, smoother highs and a slightly wider "
            "room, at a moderate level that leaves room for dynamics."
        ),
        shape=Shape(
            tilt_db_per_octave=-5.0,
            low_shelf_db=1.5,
            high_shelf_db=-1.5,
            high_shelf_hz=8000.0,
            side_db=-8.0,
        ),
        loudness_lufs=-16.0,
    ),
    Preset(
        id="classical",
        name="Classical",
        description=(
            "Natural and spacious: lows down to 20 Hz, a softer top and a wide hall image, "
            "at a quiet level that leaves room for wide dynamics."
        ),
        shape=Shape(
            tilt_db_per_octave=-5.0,
            low_cut_hz=20.0,
            high_shelf_db=-1.0,
            high_shelf_hz=10000.0,
            side_db=-6.0,
            side_low_cut_hz=80.0,
        ),
        loudness_lufs=-18.0,
    ),
    Preset(
        id="live",
        name="Live",
        description=(
            "For concert recordings: less stage boom around 250 Hz, a little more presence, "
            "a wide room and crowd, a little below streaming loudness."
        ),
        shape=Shape(
            low_shelf_db=-1.5,
            low_shelf_hz=100.0,
            bells=(
                Bell(hz=250.0, gain_db=-2.0, width_octaves=1.5),
                Bell(hz=2500.0, gain_db=1.5, width_octaves=2.0),
            ),
            side_db=-6.0,
        ),
        loudness_lufs=-15.0,
    ),
    Preset(
        id="podcast",
        name="Podcast",
        description=(
            "Speech: rumble below 80 Hz cut, less boominess, more presence around 3.5 kHz "
            "for intelligibility, near-mono, at the -16 LUFS podcast level."
        ),
        shape=Shape(
            tilt_db_per_octave=-4.0,
            low_shelf_db=-2.0,
            low_shelf_hz=200.0,
            bells=(Bell(hz=3500.0, gain_db=3.0, width_octaves=2.0),),
            low_cut_hz=90.0,
            high_cut_hz=16000.0,
            side_db=-30.0,
        ),
        # Apple Podcasts asks for -16 LUFS (+/- 1 dB) and -1 dBTP.
        loudness_lufs=-16.0,
    ),
)

PRESETS: dict[str, Preset] = {preset.id: preset for preset in _CATALOGUE}


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
