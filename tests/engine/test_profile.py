"""Reference profiles: small, exact JSON, versioned, deterministic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mastering.engine.analysis import analyze
from mastering.engine.preset_audio import preset_profile
from mastering.engine.profile import (
    ENGINE_VERSION,
    ProfileError,
    ProfileVersionMismatch,
    ReferenceProfile,
)
from mastering.presets import PRESETS
from mastering.track import Track
from tests.audio_factory import tone_mix


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return analyze(Track(tone_mix(20.0, 48_000, seed=7, peak_dbfs=-3.0), 48_000))


def test_json_round_trip_is_exact(profile: ReferenceProfile) -> None:
    data = profile.to_bytes()
    assert ReferenceProfile.from_bytes(data) == profile
    assert len(data) < 64_000  # two 2049-bin spectra and a few numbers
    document = json.loads(data)
    assert document["engine_version"] == ENGINE_VERSION
    assert document["sample_rate"] == 48_000


def test_describes_the_reference(profile: ReferenceProfile) -> None:
    assert (profile.sample_rate, profile.channels, profile.frames) == (48_000, 2, 960_000)
    assert profile.lufs is not None
    assert -40.0 < profile.lufs < 0.0
    # Peaking at -3 dBFS, under matchering's ceiling: the master is scaled down to match.
    assert profile.amplitude_coefficient == pytest.approx(10 ** (-3 / 20) / 0.998, rel=0.02)
    assert len(profile.fingerprint) == 64


def test_another_engine_version_is_refused(profile: ReferenceProfile) -> None:
    document = json.loads(profile.to_bytes())
    document["engine_version"] = "spectrum-engine-0"
    with pytest.raises(ProfileVersionMismatch):
        ReferenceProfile.from_bytes(json.dumps(document).encode())


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"format": "something else"}', b"\xff\xfe"],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ProfileError):
        ReferenceProfile.from_bytes(data)


def test_truncated_spectrum_is_refused(profile: ReferenceProfile) -> None:
    document = json.loads(profile.to_bytes())
    document["mid_spectrum"]["base64"] = document["mid_spectrum"]["base64"][:400]
    with pytest.raises(ProfileError):
        ReferenceProfile.from_bytes(json.dumps(document).encode())


def test_analysing_the_same_reference_twice_gives_identical_profiles() -> None:
    samples = tone_mix(12.0, 44_100, seed=9)
    first = analyze(Track(samples, 44_100))
    second = analyze(Track(samples.copy(), 44_100))
    assert first == second
    assert first.to_bytes() == second.to_bytes()


def test_different_audio_has_a_different_fingerprint(profile: ReferenceProfile) -> None:
    other = tone_mix(20.0, 48_000, seed=8, peak_dbfs=-3.0)
    assert analyze(Track(other, 48_000)).fingerprint != profile.fingerprint


def test_presets_are_profiles_analysed_once() -> None:
    preset = PRESETS["warm"]
    first = preset_profile(preset)
    assert preset_profile(preset) is first
    assert first.lufs is not None
    assert preset_profile(PRESETS["bright"]).mid_spectrum != first.mid_spectrum


def test_profile_is_immutable(profile: ReferenceProfile) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.match_rms = 1.0  # type: ignore[misc]
    assert np.all(np.asarray(profile.mid_spectrum) >= 0)
