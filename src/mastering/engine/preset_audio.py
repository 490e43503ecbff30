"""Render a preset as a reference signal, and analyse it into a profile.

matchering derives from a reference only its loudest passages' average mid and
side spectra and their RMS. Shaped noise with the preset's spectrum and width,
scaled to the preset's integrated loudness, gives exactly those, deterministically
(the noise is seeded from the preset's id), with no audio files to ship.

The noise is stationary, so its loudest passages are all of it, and its loudness
is measured with the engine's own BS.1770 meter: a job that takes its loudness
from the reference (the matchering limiter) lands near the preset's
``loudness_lufs`` too.

A real master peaks near its ceiling, and matchering scales its result by how far
the reference peaks below full scale, so the rendering's sample peak is placed at
the preset's ceiling where a handful of samples can do it (``_place_peak``): with
the matchering limiter a master then peaks at the preset's ceiling. Louder presets'
noise has far more samples over the ceiling (Gaussian noise peaks about 15 dB above
its RMS; Loud's rendering near +5 dBFS). It is float32 and is not clipped (clipping
that much would spread distortion over the whole spectrum), and ``analyze`` treats it
as matchering treats a float reference above full scale: no peak normalisation
(amplitude coefficient 1), so a master with the matchering limiter peaks at that
limiter's own ceiling, as it would against a real loud reference.
"""

from __future__ import annotations

import zlib
from functools import cache

import numpy as np

from mastering.engine import fft
from mastering.engine.analysis import analyze, integrated_loudness
from mastering.engine.dsp import Float64Array
from mastering.engine.params import INTERNAL_RATE
from mastering.engine.profile import ReferenceProfile
from mastering.presets import Preset, Shape
from mastering.track import Track

PRESET_SAMPLE_RATE = INTERNAL_RATE
# matchering cuts 30 s into three 10-second pieces and averages the loudest (one or
# two of these equal-level ones): over 100 4096-point frames, so a 1/3-octave band of
# the measured spectrum is within a few tenths of a dB of the shape.
PRESET_SECONDS = 30.0
_PIVOT_HZ = 1000.0
# Nothing below this: no real master carries subsonic content.
_SUBSONIC_HZ = 10.0
# At most this share of samples is clipped to place the peak: a few dozen of 2.6
# million change the spectra and the loudness by far less than 0.01 dB. The presets
# at -14 LUFS or quieter have at most a dozen samples over -1 dBFS; the loud ones
# tens of thousands over -2 dBFS.
_MAX_CLIPPED_SHARE = 1e-4


def _shape_db(shape: Shape, freqs: Float64Array) -> tuple[Float64Array, Float64Array]:
    """The mid and side levels (dB) of ``shape`` at ``freqs`` (all above 0 Hz).

    The terms are the usual analogue magnitude responses, so they read like an
    engineer's EQ moves: shelves half-way at their corner, Butterworth band edges.
    """
    octaves = np.log2(freqs / _PIVOT_HZ)
    mid = shape.tilt_db_per_octave * octaves
    mid += shape.low_shelf_db / (1.0 + (freqs / shape.low_shelf_hz) ** 2)
    high = (freqs / shape.high_shelf_hz) ** 2
    mid += shape.high_shelf_db * high / (1.0 + high)
    for bell in shape.bells:
        distance = np.log2(freqs / bell.hz) / bell.width_octaves
        mid += bell.gain_db * np.exp(-4.0 * np.log(2.0) * distance**2)
    mid -= 10.0 * np.log10(1.0 + (shape.low_cut_hz / freqs) ** 8)  # 24 dB/octave
    mid -= 10.0 * np.log10(1.0 + (freqs / shape.high_cut_hz) ** 4)  # 12 dB/octave
    side = mid + shape.side_db - 10.0 * np.log10(1.0 + (shape.side_low_cut_hz / freqs) ** 4)
    return mid, side


def shape_gains(shape: Shape, frames: int) -> Float64Array:
    """(2, frames // 2 + 1) linear mid and side gains on the rfft bins of ``frames``
    samples at ``PRESET_SAMPLE_RATE``; zero below the audible range."""
    freqs = np.fft.rfftfreq(frames, 1.0 / PRESET_SAMPLE_RATE).astype(np.float64, copy=False)
    audible = freqs >= _SUBSONIC_HZ
    gains = np.zeros((2, freqs.shape[0]))
    mid_db, side_db = _shape_db(shape, freqs[audible])
    gains[0, audible] = 10.0 ** (mid_db / 20.0)
    gains[1, audible] = 10.0 ** (side_db / 20.0)
    return gains


def _shaped_noise(shape: Shape, seed: int, frames: int) -> Float64Array:
    """(frames, 2) left/right noise whose mid and side have ``shape``'s spectra.

    Drawn in the frequency domain: every bin of one 30-second FFT gets exactly the
    shape's magnitude and a random phase, and one inverse FFT brings it back (a sum
    of 660,000 random-phase sinusoids: Gaussian noise in time). Unlike white noise
    filtered to the shape, no bin's level is left to chance, so two renderings of the
    same shape measure within about 0.2 dB of each other in every octave band.
    """
    bins = frames // 2 + 1
    rng = np.random.default_rng(seed)
    spectrum = np.exp(2j * np.pi * rng.random((2, bins)))
    spectrum *= shape_gains(shape, frames)
    mid, side = fft.irfft(spectrum, n=frames, axis=1)
    stereo: Float64Array = np.stack([mid + side, mid - side], axis=1)
    return stereo


def _place_peak(stereo: Float64Array, ceiling: float) -> None:
    """Put the sample peak of (frames, 2) ``stereo`` at ``ceiling``, where a handful
    of samples can do it: the few over it are clipped, or the largest one is raised
    (both channels by the same amount, so the side is left untouched). Noise with
    more than that over the ceiling is left as it is (see the module's docstring)."""
    over = np.count_nonzero(np.abs(stereo) > ceiling)
    if over > stereo.size * _MAX_CLIPPED_SHARE:
        return
    np.clip(stereo, -ceiling, ceiling, out=stereo)
    frame, channel = np.unravel_index(int(np.argmax(np.abs(stereo))), stereo.shape)
    peak = float(stereo[frame, channel])
    # The other channel ends no further from zero than max(its own value, the step),
    # both under the ceiling.
    stereo[frame] += np.copysign(ceiling - abs(peak), peak)


@cache
def render_preset(preset: Preset) -> Track:
    """The preset as 30 s of stereo float32 at 44.1 kHz, at its ``loudness_lufs``."""
    frames = int(PRESET_SECONDS * PRESET_SAMPLE_RATE)
    stereo = _shaped_noise(preset.shape, zlib.crc32(preset.id.encode("utf-8")), frames)
    measured = integrated_loudness(stereo, PRESET_SAMPLE_RATE)
    if measured is None:  # only for silence, which no shape gives
        raise ValueError(f"preset {preset.id} renders as silence")
    # Gated loudness scales with the signal (the relative gate moves with it, and
    # the noise is far above the absolute one): one measurement sets the level.
    stereo *= 10.0 ** ((preset.loudness_lufs - measured) / 20.0)
    _place_peak(stereo, 10.0 ** (preset.true_peak_dbtp / 20.0))
    return Track(samples=stereo.astype(np.float32), sample_rate=PRESET_SAMPLE_RATE)


@cache
def preset_profile(preset: Preset) -> ReferenceProfile:
    """The preset as a reference profile: rendered and analysed once per process."""
    return analyze(render_preset(preset))
