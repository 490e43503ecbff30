"""Music-like synthetic stereo for the benchmark, generated block by block.

Like ``tests/audio_factory.tone_mix`` (harmonic notes, noise, envelopes) but with a
beat, a bass line, chord changes and panning, and written to WAV in blocks so an
hour-long file never sits in memory. Deterministic for a given style, seed and rate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

Samples = npt.NDArray[np.float32]
_BLOCK_S = 10.0
_BEAT_S = 0.5  # 120 BPM
_BAR_S = 4 * _BEAT_S
_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor


@dataclass(frozen=True)
class Style:
    name: str
    kick: float
    snare: float
    hats: float
    bass: float
    chords: float
    melody: float
    width: float  # 0 = mono, 1 = wide
    peak_dbfs: float


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style("rock", 0.9, 0.7, 0.35, 0.6, 0.8, 0.4, 0.7, -1.0),
        Style("acoustic", 0.0, 0.15, 0.1, 0.0, 0.9, 0.6, 0.5, -6.0),
        Style("electronic", 1.2, 0.4, 0.3, 1.1, 0.4, 0.3, 0.6, -0.5),
        Style("mono", 0.8, 0.6, 0.3, 0.6, 0.7, 0.4, 0.0, -3.0),
        Style("quiet", 0.5, 0.3, 0.2, 0.4, 0.7, 0.5, 0.5, -28.0),
    )
}


def _cycles(frequency: npt.NDArray[np.float64], t: npt.NDArray[np.float64]) -> Samples:
    # The phase wraps in float64 (an hour at kHz is ~1e7 cycles); the rest is float32.
    cycles: Samples = np.mod(frequency * t, 1.0).astype(np.float32)
    return cycles


def _harmonics(cycles: Samples, weights: tuple[float, ...]) -> Samples:
    out = np.zeros_like(cycles)
    for h, weight in enumerate(weights, start=1):
        out += weight * np.sin(np.float32(2 * np.pi * h) * cycles)
    return out


def _phase_sin(frequency: npt.NDArray[np.float64], t: npt.NDArray[np.float64]) -> Samples:
    return _harmonics(_cycles(frequency, t), (1.0,))


def _decay(t: npt.NDArray[np.float64], seconds: float) -> Samples:
    out: Samples = np.exp(t.astype(np.float32) / np.float32(-seconds))
    return out


class Song:
    def __init__(self, style: Style, seed: int, rate: int, seconds: float) -> None:
        self.style, self.rate = style, rate
        self.frames = round(seconds * rate)
        bars = int(seconds / _BAR_S) + 2
        rng = np.random.default_rng(seed)
        key = rng.integers(0, 12)
        degrees = rng.integers(0, 7, size=bars)
        self.roots = 110.0 * 2 ** ((key + _SCALE[degrees]) / 12)  # A2 region
        self.melody = 440.0 * 2 ** ((key + _SCALE[rng.integers(0, 7, size=bars * 8)]) / 12)
        self.section_gain = 10 ** (rng.uniform(-4.0, 0.0, size=bars // 8 + 2) / 20)
        self.seed = seed
        self.gain = 1.0
        self.gain = 10 ** (style.peak_dbfs / 20) / self._peak_estimate()

    def _peak_estimate(self) -> float:
        probe = min(self.frames, round(20 * self.rate))
        return float(np.max(np.abs(self.block(0, probe)))) * 1.05

    def block(self, start: int, stop: int) -> Samples:
        s = self.style
        t = (start + np.arange(stop - start)) / self.rate
        bar = (t // _BAR_S).astype(np.intp)
        beat_t = np.mod(t, _BEAT_S)
        beat = (t // _BEAT_S).astype(np.intp)
        rng = np.random.default_rng([self.seed, start])
        noise = rng.standard_normal((t.shape[0], 2)).astype(np.float32)
        mono = np.zeros(t.shape[0], np.float32)
        left = np.zeros(t.shape[0], np.float32)
        right = np.zeros(t.shape[0], np.float32)
        if s.kick:
            sweep = 50.0 * beat_t + 60.0 * 0.04 * (1 - np.exp(-beat_t / 0.04))
            mono += s.kick * _phase_sin(np.ones_like(t), sweep) * _decay(beat_t, 0.12)
        if s.snare:
            on = (beat % 2 == 1).astype(np.float32)
            mono += s.snare * 0.5 * on * noise[:, 0] * _decay(beat_t, 0.07)
        if s.hats:
            eighth = np.mod(t, _BEAT_S / 2)
            # (x[n] - x[n-2]) * [1, 2, 1] / 4: a band around a quarter of the rate that
            # falls off towards Nyquist, like a cymbal's.
            band = noise[:, 1] - np.concatenate([[0.0, 0.0], noise[:-2, 1]]).astype(np.float32)
            hiss = np.convolve(band, np.array([0.25, 0.5, 0.25], np.float32), mode="same")
            env = _decay(eighth, 0.02)
            left += s.hats * 0.3 * hiss * env
            right += s.hats * 0.3 * np.roll(hiss, 7) * env
        if s.bass:
            f0 = self.roots[bar] / 2
            env = 0.6 + 0.4 * _decay(beat_t, 0.25)
            mono += s.bass * 0.5 * _harmonics(_cycles(f0, t), (1.0, 0.5, 0.33)) * env
        if s.chords:
            env = 0.5 + 0.5 * _decay(np.mod(t, _BAR_S), 1.0)
            for index, interval in enumerate((0, 3, 7)):
                f0 = self.roots[bar] * 2 ** (interval / 12) * 2
                voice = _harmonics(_cycles(f0, t), (1.0, 0.35, 0.19, 0.125))
                pan = 0.5 + s.width * (index - 1) * 0.4
                left += s.chords * 0.25 * voice * env * (1 - pan)
                right += s.chords * 0.25 * voice * env * pan
        if s.melody:
            note = (t // (_BAR_S / 8)).astype(np.intp)
            vibrato = 1 + 0.003 * np.sin(2 * np.pi * 5 * t)
            env = _decay(np.mod(t, _BAR_S / 8), 0.3)
            line = s.melody * 0.3 * _phase_sin(self.melody[note] * vibrato, t) * env
            left += line * (1 - 0.3 * s.width)
            right += line * (1 + 0.3 * s.width)
        room = 0.02 * s.width * noise
        section = self.section_gain[bar // 8].astype(np.float32)
        out = np.stack([mono + left + room[:, 0], mono + right + room[:, 1]], axis=1)
        if s.width == 0.0:
            out[:, 1] = out[:, 0]
        out *= (section * self.gain)[:, None]
        return out.astype(np.float32)


def write_song(
    path: Path, style: str, seed: int, rate: int, seconds: float, peak_dbfs: float | None = None
) -> Path:
    """Write a 16-bit WAV of the style (a mono style is written as one channel)."""
    chosen = STYLES[style]
    if peak_dbfs is not None:
        chosen = replace(chosen, peak_dbfs=peak_dbfs)
    song = Song(chosen, seed, rate, seconds)
    channels = 1 if song.style.width == 0.0 else 2
    block = round(_BLOCK_S * rate)
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as out:
        for start in range(0, song.frames, block):
            samples = song.block(start, min(start + block, song.frames))
            out.write(np.clip(samples[:, :channels], -1.0, 1.0))
    return path


def song(style: str, seed: int, rate: int, seconds: float) -> Samples:
    """The whole song in memory (for short clips)."""
    generated = Song(STYLES[style], seed, rate, seconds)
    samples = generated.block(0, generated.frames)
    if generated.style.width == 0.0:
        samples = samples[:, :1]
    return np.clip(samples, -1.0, 1.0)
