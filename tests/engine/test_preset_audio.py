"""Presets rendered and analysed: each profile is the shape, loudness, width and peak
its description promises, deterministically, and no two presets sound alike.

Levels are read off the profiles as the engine reads them (matchering's average
4096-point mid and side spectra at 44.1 kHz), as band levels in dB relative to the
mid channel's octave around 1 kHz, so loudness differences between presets do not
count as tonal ones.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt
import pytest

from mastering.engine.analysis import analyze, integrated_loudness
from mastering.engine.params import FFT_SIZE, INTERNAL_RATE, THRESHOLD
from mastering.engine.preset_audio import (
    PRESET_SAMPLE_RATE,
    preset_profile,
    render_preset,
    shape_gains,
)
from mastering.engine.profile import ReferenceProfile
from mastering.presets import PRESETS, Preset

FREQS = np.fft.rfftfreq(FFT_SIZE, 1.0 / INTERNAL_RATE)
# Octave bands 63 Hz .. 16 kHz: wide enough that the noise's randomness is a few
# tenths of a dB, narrow enough for every bell and shelf of the catalogue.
OCTAVE_CENTRES = 1000.0 * 2.0 ** np.arange(-4, 5)
# Two renderings of one shape (different seeds) differ by up to about 0.25 dB in an
# octave band; a broad level change under about 1 dB is hard to hear. Presets must
# differ by at least that somewhere, four times the rendering's own noise.
SAME_SHAPE_NOISE_DB = 0.5
DISTINCT_DB = 1.0


def in_band(low: float, high: float) -> npt.NDArray[np.bool_]:
    """The analysis bins from ``low`` up to (not including) ``high`` Hz."""
    freqs = FREQS
    return (freqs >= low) & (freqs < high)


def band_db(spectrum: tuple[float, ...], low: float, high: float) -> float:
    power = np.asarray(spectrum)[in_band(low, high)] ** 2
    return float(10.0 * np.log10(power.mean()))


def level(profile: ReferenceProfile, low: float, high: float, *, side: bool = False) -> float:
    """A band's level (mid, or side) relative to the mid's octave around 1 kHz."""
    spectrum = profile.side_spectrum if side else profile.mid_spectrum
    return band_db(spectrum, low, high) - band_db(profile.mid_spectrum, 707.0, 1414.0)


def octave_levels(profile: ReferenceProfile) -> npt.NDArray[np.float64]:
    """Mid then side octave-band levels, relative to the mid's mean band level."""
    bands = [
        band_db(spectrum, centre / np.sqrt(2.0), centre * np.sqrt(2.0))
        for spectrum in (profile.mid_spectrum, profile.side_spectrum)
        for centre in OCTAVE_CENTRES
    ]
    levels = np.asarray(bands)
    return levels - levels[: OCTAVE_CENTRES.shape[0]].mean()


def shape_distance(first: ReferenceProfile, second: ReferenceProfile) -> float:
    """The largest octave-band difference of two profiles' mid or side, in dB."""
    return float(np.max(np.abs(octave_levels(first) - octave_levels(second))))


@pytest.fixture(scope="module")
def profiles() -> dict[str, ReferenceProfile]:
    return {preset_id: preset_profile(preset) for preset_id, preset in PRESETS.items()}


def vs_balanced(
    profiles: dict[str, ReferenceProfile], preset_id: str, low: float, high: float
) -> float:
    return level(profiles[preset_id], low, high) - level(profiles["balanced"], low, high)


def test_treble_boost_is_brighter_and_bass_boost_bassier(
    profiles: dict[str, ReferenceProfile],
) -> None:
    # Given the two tone-control presets' profiles
    treble, bass = profiles["treble-boost"], profiles["bass-boost"]
    # Then Treble Boost has far more energy above 5 kHz relative to 1 kHz
    assert level(treble, 5000, 16000) > level(bass, 5000, 16000) + 3.0
    # And Bass Boost far more below 120 Hz
    assert level(bass, 20, 120) > level(treble, 20, 120) + 3.0
    # And each raises its own end of the spectrum by about the 6 dB it promises,
    # against Balanced (shelves reach half their gain at the corner)
    assert vs_balanced(profiles, "bass-boost", 20, 60) > 5.0
    assert vs_balanced(profiles, "treble-boost", 10000, 16000) > 4.5


def test_v_shape_scoops_the_mids(profiles: dict[str, ReferenceProfile]) -> None:
    # Given V-Shape and Balanced
    def scoop(profile: ReferenceProfile) -> float:
        mids = level(profile, 700, 1400)
        return (level(profile, 40, 150) + level(profile, 5000, 16000)) / 2.0 - mids

    # Then V-Shape's mids sit lower against its lows and highs, by several dB
    assert scoop(profiles["v-shape"]) > scoop(profiles["balanced"]) + 4.0


def test_podcast_is_near_mono_with_its_rumble_cut(profiles: dict[str, ReferenceProfile]) -> None:
    podcast, balanced = profiles["podcast"], profiles["balanced"]
    # Then its side channel is far below Balanced's: near mono
    width = level(podcast, 200, 8000, side=True) - level(podcast, 200, 8000)
    assert width < -25.0
    assert width < level(balanced, 200, 8000, side=True) - level(balanced, 200, 8000) - 15.0
    # And its energy below 80 Hz is cut
    assert vs_balanced(profiles, "podcast", 20, 80) < -12.0
    # And it has presence for intelligibility, and less boominess
    assert vs_balanced(profiles, "podcast", 3000, 4500) > 2.0
    assert vs_balanced(profiles, "podcast", 150, 250) < -1.5


def test_vocal_puts_presence_forward(profiles: dict[str, ReferenceProfile]) -> None:
    # Then Vocal has more 1-4 kHz presence than Balanced, less low-mid mud, some air
    assert vs_balanced(profiles, "vocal", 1000, 4000) > 1.0
    assert vs_balanced(profiles, "vocal", 2000, 4500) > 2.0
    assert vs_balanced(profiles, "vocal", 250, 400) < -1.0
    assert vs_balanced(profiles, "vocal", 12000, 16000) > 0.5


@pytest.mark.parametrize(
    ("preset_id", "low", "high", "at_least_db"),
    [
        # (preset, band, its level against Balanced's: + more, - less, at least so much)
        ("warm", 40, 200, 2.0),
        ("warm", 5000, 16000, -2.0),
        ("bright", 5000, 16000, 2.0),
        ("bright", 40, 150, -1.5),
        ("gentle", 8000, 16000, -0.5),
        ("loud", 40, 120, 1.5),
        ("loud", 8000, 16000, 0.5),
        ("rock", 40, 100, 1.0),
        ("rock", 300, 500, -1.0),
        ("rock", 2000, 3200, 1.0),
        ("hip-hop", 40, 70, 3.0),
        ("hip-hop", 2500, 3500, 0.7),
        ("electronic", 40, 63, 3.0),
        ("electronic", 10000, 16000, 0.7),
        ("jazz", 100, 200, 1.5),
        ("jazz", 8000, 16000, -1.5),
        ("classical", 20, 40, 3.0),
        ("classical", 8000, 16000, -1.5),
        ("live", 200, 315, -1.5),
        ("live", 2000, 3200, 0.7),
    ],
)
def test_each_description_is_what_the_profile_measures(
    profiles: dict[str, ReferenceProfile],
    preset_id: str,
    low: float,
    high: float,
    at_least_db: float,
) -> None:
    # When the band the description talks about is measured against Balanced
    difference = vs_balanced(profiles, preset_id, low, high)
    # Then it moved the way the description says, by a measurable amount
    if at_least_db > 0:
        assert difference >= at_least_db
    else:
        assert difference <= at_least_db


def test_widths_are_as_described(profiles: dict[str, ReferenceProfile]) -> None:
    def width(preset_id: str) -> float:
        profile = profiles[preset_id]
        return level(profile, 200, 8000, side=True) - level(profile, 200, 8000)

    balanced = width("balanced")
    # Then the hall, the room and the crowd are wider, as are guitars and club mixes
    for wide in ("classical", "live", "jazz", "rock", "electronic", "bright"):
        assert width(wide) > balanced + 0.7, wide
    # And Hip-Hop's centre is focused, Warm slightly narrower
    assert width("hip-hop") < balanced - 1.5
    assert width("warm") < balanced - 0.7


@pytest.mark.parametrize("preset_id", list(PRESETS))
def test_bass_stays_in_mono(profiles: dict[str, ReferenceProfile], preset_id: str) -> None:
    # Given a preset's profile
    profile = profiles[preset_id]
    # Then below 80 Hz its side is well down on its mid, compared with the mids
    lows = level(profile, 40, 80, side=True) - level(profile, 40, 80)
    mids = level(profile, 707, 1414, side=True)
    assert lows < mids - 6.0


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_the_rendering_is_at_the_presets_loudness(preset: Preset) -> None:
    # When the preset is rendered
    audio = render_preset(preset)
    # Then it is 30 s of stereo at 44.1 kHz whose integrated loudness is the preset's
    assert (audio.sample_rate, audio.channels) == (PRESET_SAMPLE_RATE, 2)
    assert audio.duration_s == pytest.approx(30.0)
    measured = integrated_loudness(audio.samples, audio.sample_rate)
    assert measured == pytest.approx(preset.loudness_lufs, abs=0.1)
    # And its profile reports it
    assert preset_profile(preset).lufs == pytest.approx(preset.loudness_lufs, abs=0.1)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_the_rendering_follows_its_shape(preset: Preset) -> None:
    # Given the preset's shape on the analysis bins
    gains = shape_gains(preset.shape, FFT_SIZE)
    profile = preset_profile(preset)
    # Then the measured mid and side spectra follow it in every octave band from
    # 125 Hz (below, the 93 ms frames smear a steep low cut) within half a dB, up to
    # one overall level: nothing was clipped, nothing added
    for measured, shape in ((profile.mid_spectrum, gains[0]), (profile.side_spectrum, gains[1])):
        differences = []
        for centre in OCTAVE_CENTRES[1:]:
            band = in_band(centre / np.sqrt(2.0), centre * np.sqrt(2.0))

            ratio = np.mean(np.asarray(measured)[band] ** 2) / np.mean(shape[band] ** 2)
            differences.append(10.0 * np.log10(ratio))
        assert np.ptp(differences) < 1.0, (preset.id, np.round(differences, 2))


@pytest.mark.parametrize(
    "preset", [p for p in PRESETS.values() if p.loudness_lufs <= -14.0], ids=lambda p: p.id
)
def test_a_preset_at_streaming_loudness_peaks_at_its_ceiling(preset: Preset) -> None:
    # When a preset at -14 LUFS or quieter is rendered
    audio = render_preset(preset)
    ceiling = 10.0 ** (preset.true_peak_dbtp / 20.0)
    # Then its sample peak is its ceiling, as a master made with it would peak
    assert float(np.max(np.abs(audio.samples))) == pytest.approx(ceiling, rel=1e-6)
    # And the engine normalises it as matchering a reference peaking there: a master
    # with the matchering limiter ends at the preset's ceiling
    profile = preset_profile(preset)
    assert profile.amplitude_coefficient == pytest.approx(ceiling / THRESHOLD, rel=1e-6)


@pytest.mark.parametrize(
    "preset", [p for p in PRESETS.values() if p.loudness_lufs > -14.0], ids=lambda p: p.id
)
def test_a_loud_preset_is_rendered_above_full_scale_without_clipping(preset: Preset) -> None:
    # When a preset louder than noise can be under its ceiling is rendered
    audio = render_preset(preset)
    magnitudes = np.abs(audio.samples)
    peak = float(magnitudes.max())
    # Then it peaks above full scale, in float32, unclipped: no run of samples at
    # the peak value (a clipped signal would have many)
    assert peak > 1.0
    assert np.count_nonzero(magnitudes >= peak * 0.9999) <= 2
    # And the engine takes it as matchering takes a float reference over full scale:
    # no normalisation, its spectra and RMS as rendered
    profile = preset_profile(preset)
    assert profile.amplitude_coefficient == 1.0
    assert profile.peak == pytest.approx(peak)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_a_preset_renders_the_same_every_time(preset: Preset) -> None:
    # When the preset is rendered again, afresh (not from the process's cache)
    again = render_preset.__wrapped__(preset)
    # Then the samples are identical, and so is the profile, fingerprint included
    assert np.array_equal(again.samples, render_preset(preset).samples)
    assert analyze(again) == preset_profile(preset)


def test_the_noise_is_seeded_by_the_id_alone() -> None:
    # Given Balanced, a copy under another name, and Flat (the same shape, another id)
    balanced = PRESETS["balanced"]
    renamed = dataclasses.replace(balanced, name="Other", description="Another text.")
    # Then the renamed copy renders the same samples, Flat other noise
    assert np.array_equal(
        render_preset.__wrapped__(renamed).samples, render_preset(balanced).samples
    )
    assert not np.array_equal(
        render_preset(PRESETS["flat"]).samples, render_preset(balanced).samples
    )


def test_presets_are_pairwise_distinct(profiles: dict[str, ReferenceProfile]) -> None:
    # Given Flat and Balanced, which share the neutral shape (Flat applies none of it)
    same = shape_distance(profiles["flat"], profiles["balanced"])
    # Then their profiles differ only by the rendering's noise
    assert same < SAME_SHAPE_NOISE_DB
    # And every other pair differs audibly somewhere, well above that noise
    too_close = [
        (first, second, round(shape_distance(profiles[first], profiles[second]), 2))
        for first, second in itertools.combinations(PRESETS, 2)
        if {first, second} != {"flat", "balanced"}
        and shape_distance(profiles[first], profiles[second]) < DISTINCT_DB
    ]
    assert too_close == []
