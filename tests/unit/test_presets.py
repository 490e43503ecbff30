"""The preset catalogue: lookup, public listing, defaults and bounds (no audio here)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from mastering.options import (
    MAX_LOUDNESS_LUFS,
    MAX_TRUE_PEAK_DBTP,
    MIN_LOUDNESS_LUFS,
    MIN_TRUE_PEAK_DBTP,
    PresetDefaults,
)
from mastering.presets import NEUTRAL, PRESETS, Preset, Shape, find_preset
from tests.conftest import REPO

# The older API's presets, by display name (DESIGN.md, "Presets").
OLDER_API_NAMES = (
    "Flat",
    "Bass Boost",
    "Treble Boost",
    "V-Shape",
    "Vocal",
    "Rock",
    "Jazz",
    "Classical",
    "Electronic",
    "Hip-Hop",
    "Podcast",
    "Live",
)
TODAYS_IDS = ("balanced", "warm", "bright", "loud", "gentle")
# Spotify for Artists ("Loudness normalization"): masters louder than its -14 LUFS
# playback level should keep below -2 dBTP.
SPOTIFY_LUFS = -14.0


def test_the_catalogue_has_the_older_names_and_todays_presets_flat_first() -> None:
    # Given the catalogue
    ids = list(PRESETS)
    # Then it holds the older API's twelve and today's five, seventeen in all
    older = [find_preset(name) for name in OLDER_API_NAMES]
    assert all(preset is not None for preset in older)
    assert {preset.id for preset in older if preset} | set(TODAYS_IDS) == set(ids)
    assert len(ids) == 17
    # And a picker lists "no EQ" and the neutral balance first
    assert ids[:2] == ["flat", "balanced"]


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("rock", "rock"),
        ("Rock", "rock"),
        ("ROCK", "rock"),
        ("hip-hop", "hip-hop"),
        ("hip hop", "hip-hop"),
        ("Hip-Hop", "hip-hop"),
        ("HIP_HOP", "hip-hop"),
        ("Bass Boost", "bass-boost"),
        ("bass_boost", "bass-boost"),
        ("bass-boost", "bass-boost"),
        ("V-Shape", "v-shape"),
        ("v shape", "v-shape"),
        ("  Treble Boost ", "treble-boost"),
        ("flat", "flat"),
        ("Balanced", "balanced"),
    ],
)
def test_a_preset_is_found_by_id_or_display_name_in_any_case(asked: str, expected: str) -> None:
    # When a client names a preset by its id or its display name, in any case
    found = find_preset(asked)
    # Then it is that preset
    assert found is not None
    assert found.id == expected


@pytest.mark.parametrize(
    "asked", ["", "   ", "rockk", "bass", "hiphop", "metal", "flat!", "balanced preset"]
)
def test_an_unknown_name_finds_no_preset(asked: str) -> None:
    # When a client names no preset of the catalogue
    # Then there is none (the API answers 400 unknown_preset)
    assert find_preset(asked) is None


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_the_public_listing_of_every_preset(preset: Preset) -> None:
    # When GET /presets lists a preset
    public = preset.to_public()
    # Then it has exactly the contract's fields, JSON-serialisable, within the bounds a
    # client may ask for itself
    assert set(public) == {"id", "name", "description", "loudness_lufs", "true_peak_dbtp"}
    assert json.loads(json.dumps(public)) == public
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", public["id"])
    assert public["id"] == preset.id
    assert find_preset(public["name"]) is preset
    assert MIN_LOUDNESS_LUFS <= public["loudness_lufs"] <= MAX_LOUDNESS_LUFS
    assert MIN_TRUE_PEAK_DBTP <= public["true_peak_dbtp"] <= MAX_TRUE_PEAK_DBTP
    # And a description a musician can read: a sentence or two, not a name repeated
    description = public["description"]
    assert 40 <= len(description) <= 200
    assert description.endswith(".")
    assert description.lower() != preset.name.lower()


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_a_job_with_the_preset_gets_its_defaults(preset: Preset) -> None:
    # When a job names the preset and leaves loudness, ceiling and intensity out
    defaults = preset.defaults()
    # Then it gets the preset's own
    assert defaults == PresetDefaults(
        loudness_lufs=preset.loudness_lufs,
        true_peak_dbtp=preset.true_peak_dbtp,
        intensity=preset.intensity,
    )
    assert 0.0 <= defaults.intensity <= 1.0


def test_flat_keeps_the_targets_balance_and_has_the_neutral_shape_if_raised() -> None:
    # Given Flat
    flat = PRESETS["flat"]
    # Then none of its EQ is applied by default; a client that raises its intensity
    # gets Balanced's neutral balance, not something of Flat's own
    assert flat.intensity == 0.0
    assert flat.shape == PRESETS["balanced"].shape == NEUTRAL
    # And every other preset applies its EQ (Gentle at half strength, as it says)
    others = {preset.id: preset.intensity for preset in PRESETS.values() if preset.id != "flat"}
    assert all(intensity > 0.0 for intensity in others.values())
    assert others["gentle"] == 0.5
    assert "half-strength" in PRESETS["gentle"].description


def test_every_shape_but_flats_is_its_own() -> None:
    # Given the presets' shapes
    shapes = [preset.shape for preset in PRESETS.values() if preset.id != "flat"]
    # Then no two are alike (the engine tests measure how far apart they sound)
    assert len(set(shapes)) == len(shapes)


def test_loudness_and_ceilings_suit_the_material() -> None:
    # Classical and Jazz keep their dynamics: moderate loudness
    assert -18.0 <= PRESETS["classical"].loudness_lufs <= -16.0
    assert -18.0 <= PRESETS["jazz"].loudness_lufs <= -16.0
    # Podcast at the podcast level (Apple Podcasts: -16 LUFS, -1 dBTP)
    assert (PRESETS["podcast"].loudness_lufs, PRESETS["podcast"].true_peak_dbtp) == (-16.0, -1.0)
    # Loud is the loudest; Gentle and Classical the quietest
    loudness = {preset.id: preset.loudness_lufs for preset in PRESETS.values()}
    assert max(loudness, key=loudness.__getitem__) == "loud"
    assert min(loudness.values()) == loudness["gentle"] == loudness["classical"]
    # Masters louder than Spotify's playback level keep 2 dB under full scale, the
    # others 1 dB
    for preset in PRESETS.values():
        expected = -2.0 if preset.loudness_lufs > SPOTIFY_LUFS else -1.0
        assert preset.true_peak_dbtp == expected, preset.id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "Hip Hop"}, "lower-case"),
        ({"id": "rock-"}, "lower-case"),
        ({"loudness_lufs": -4.0}, "loudness_lufs"),
        ({"loudness_lufs": -31.0}, "loudness_lufs"),
        ({"true_peak_dbtp": 0.5}, "true_peak_dbtp"),
        ({"true_peak_dbtp": -10.0}, "true_peak_dbtp"),
        ({"intensity": 1.5}, "intensity"),
        ({"intensity": -0.1}, "intensity"),
    ],
)
def test_a_catalogue_entry_out_of_bounds_is_refused(
    change: dict[str, object], message: str
) -> None:
    # Given a valid preset
    preset = PRESETS["rock"]
    # When an entry is written with an id or a default the API would refuse
    # Then it fails at once, naming the field (the catalogue is checked at import)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(preset, **change)  # type: ignore[arg-type]


def test_presets_are_hashable_values() -> None:
    # The engine caches renderings per preset: equal presets are one cache entry
    copy = dataclasses.replace(PRESETS["warm"], shape=dataclasses.replace(PRESETS["warm"].shape))
    assert copy == PRESETS["warm"]
    assert hash(copy) == hash(PRESETS["warm"])
    assert isinstance(copy.shape, Shape)


def test_listing_presets_loads_no_numerics() -> None:
    # Given a fresh process, as the presign function is
    probe = (
        "import json, sys\n"
        "from mastering.presets import PRESETS\n"
        "[p.to_public() for p in PRESETS.values()]\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    # When it lists the presets
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    # Then numpy and the engine were never imported
    assert not [m for m in loaded if m.split(".")[0] in ("numpy", "scipy")]
    assert "mastering.engine.preset_audio" not in loaded
