"""Render a preset as a reference signal, and analyse it into a profile.

matchering derives from a reference only its loudest passages' average mid and
side spectra and their RMS. Shaped noise with the preset's spectrum, loudness and
width gives exactly those, deterministically, with no audio files to ship.
"""

from __future__ import annotations

import zlib
from functools import cache

import numpy as np

from mastering.audio.decode import DecodedAudio
from mastering.engine.profile import ReferenceProfile
from mastering.presets import Preset

PRESET_SAMPLE_RATE = 44100
PRESET_SECONDS = 30.0
_PIVOT_HZ = 1000.0
_LOWEST_HZ = 20.0


def _spectral_gain(preset: Preset, freqs: np.ndarray) -> np.ndarray:
    safe = np.maximum(freqs, _LOWEST_HZ)
    gain_db = preset.tilt_db_per_octave * np.log2(safe / _PIVOT_HZ)
    low = 1.0 / (1.0 + (safe / preset.low_shelf_hz) ** 2)
    high_ratio = (safe / preset.high_shelf_hz) ** 2
    gain_db += preset.low_shelf_db * low + preset.high_shelf_db * high_ratio / (1.0 + high_ratio)
    gain: np.ndarray = 10.0 ** (gain_db / 20.0)
    # Nothing below the audible range: a real master is high-passed there.
    gain[freqs < _LOWEST_HZ] = 0.0
    return gain


def _shaped_noise(preset: Preset, rng: np.random.Generator, frames: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(frames))
    spectrum *= _spectral_gain(preset, np.fft.rfftfreq(frames, 1.0 / PRESET_SAMPLE_RATE))
    shaped: np.ndarray = np.fft.irfft(spectrum, n=frames)
    normalised: np.ndarray = shaped / np.sqrt(np.mean(shaped**2))
    return normalised


@cache
def render_preset(preset: Preset) -> DecodedAudio:
    frames = int(PRESET_SECONDS * PRESET_SAMPLE_RATE)
    rng = np.random.default_rng(zlib.crc32(preset.id.encode("utf-8")))
    mid = _shaped_noise(preset, rng, frames)
    side = _shaped_noise(preset, rng, frames) * 10.0 ** (preset.side_db / 20.0)
    stereo = np.stack([mid + side, mid - side], axis=1)
    stereo *= 10.0 ** (preset.rms_dbfs / 20.0) / np.sqrt(np.mean(stereo**2))
    return DecodedAudio(samples=stereo.astype(np.float32), sample_rate=PRESET_SAMPLE_RATE)


@cache
def preset_profile(preset: Preset) -> ReferenceProfile:
    """The preset as a reference profile: rendered and analysed once per process."""
    from mastering.engine.analysis import analyze

    return analyze(render_preset(preset))
