"""Synthetic test audio: small, deterministic, and shaped like music rather than test tones.

Pure helpers, shared by every test that needs an audio file. Nothing here touches the
service code except ``to_ffmpeg``, which uses the same ffmpeg the service would.
"""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
from scipy.signal import butter, lfilter

from mastering.audio.ffmpeg import find_ffmpeg

Samples = npt.NDArray[np.float32]


def tone_mix(
    seconds: float,
    rate: int = 44_100,
    channels: int = 2,
    seed: int = 0,
    *,
    peak_dbfs: float = -6.0,
) -> Samples:
    """A music-like signal: a few harmonic "notes", low-passed noise and a plucked envelope.

    Returns float32 shaped (frames, channels), peaking at ``peak_dbfs``. Channels differ
    slightly (pan and noise) so stereo handling is exercised. The same seed gives the same
    samples.
    """
    rng = np.random.default_rng(seed)
    frames = round(seconds * rate)
    t = np.arange(frames) / rate
    fundamentals = rng.uniform(110.0, 330.0, size=3)
    b, a = butter(2, min(4_000.0 / (rate / 2), 0.99))
    # Notes every half second that decay, over a slow swell: neither flat nor gated.
    beat = np.exp(-4.0 * np.mod(t, 0.5)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t) ** 2)
    out = np.empty((frames, channels), dtype=np.float64)
    for channel in range(channels):
        pan = 1.0 - 0.25 * channel / max(channels - 1, 1)
        voice = np.zeros(frames)
        for index, f0 in enumerate(fundamentals):
            for harmonic in range(1, 6):
                phase = rng.uniform(0, 2 * np.pi)
                voice += np.sin(2 * np.pi * f0 * harmonic * t + phase) / (harmonic * (index + 1))
        noise = lfilter(b, a, rng.standard_normal(frames))
        out[:, channel] = pan * beat * (voice + 0.5 * noise)
    peak = float(np.max(np.abs(out))) or 1.0
    return (out * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def sine(
    seconds: float,
    rate: int = 48_000,
    *,
    freq: float = 997.0,
    amplitude: float = 0.5,
    channels: int = 2,
    phase: float = 0.0,
) -> Samples:
    """A sine of peak ``amplitude`` in every channel, shaped (frames, channels)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t + phase)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def silence(seconds: float, rate: int = 44_100, channels: int = 2) -> Samples:
    return np.zeros((round(seconds * rate), channels), dtype=np.float32)


def write_wav(
    path: Path, samples: npt.NDArray[np.floating], rate: int, subtype: str = "PCM_16"
) -> Path:
    """Write a WAV (``subtype`` "PCM_16", "PCM_24" or "FLOAT") and return its path."""
    sf.write(path, samples, rate, subtype=subtype, format="WAV")
    return path


def write_audio(
    path: Path,
    samples: npt.NDArray[np.floating],
    rate: int,
    *,
    container: str,
    subtype: str | None = None,
) -> Path:
    """Write any container libsndfile knows ("WAV", "AIFF", "FLAC", "OGG", ...)."""
    sf.write(path, samples, rate, format=container, subtype=subtype)
    return path


def to_ffmpeg(source: Path, dest: Path, *output_args: str) -> Path:
    """Transcode ``source`` with ffmpeg, e.g. ``to_ffmpeg(wav, m4a, "-c:a", "aac")``."""
    command = [
        find_ffmpeg(None),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        *output_args,
        str(dest),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return dest


def best_correlation(
    a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], max_lag: int = 4_096
) -> float:
    """Peak normalised cross-correlation of the channel means within ``max_lag`` frames.

    Lossy codecs delay and smear the signal; a high value still says "same audio".
    """
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1).mean(axis=1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1).mean(axis=1)
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size))
    xcorr = np.fft.irfft(spectrum, size)
    lags = np.concatenate([xcorr[: max_lag + 1], xcorr[-max_lag:]])
    norm = float(np.sqrt(np.dot(x, x) * np.dot(y, y))) or 1.0
    return float(np.max(lags) / norm)


# Kinds of material a mastering service meets, for tests that must hold on all of them.
MATERIALS = ("dense_loud", "quiet_dynamic", "bass_heavy", "speech")
# And for the meters: a track whose loudness range is wide by construction.
METER_MATERIALS = (*MATERIALS, "loud_and_quiet")


def material(kind: str, seconds: float, rate: int, seed: int = 0) -> Samples:
    """(frames, 2) float32 of one kind in ``MATERIALS``:

    - ``dense_loud``: an electronic mix soft-clipped to a small crest factor, near full scale;
    - ``quiet_dynamic``: an acoustic piece swelling from -35 dB to -12 dBFS peaks;
    - ``bass_heavy``: a mix under a dominant 45 Hz sub bass and kick;
    - ``speech``: a near-mono voice (formant-filtered pulses, syllables and pauses);
    - ``loud_and_quiet`` (not in ``MATERIALS``): the dense mix in 6-s sections,
      alternately near -10 LUFS and 20 dB quieter, near -30 LUFS.
    """
    from bench.signals import song

    frames = round(seconds * rate)
    t = np.arange(frames) / rate
    if kind == "dense_loud":
        mix = song("electronic", seed, rate, seconds).astype(np.float64)
        out = np.tanh(3.0 * mix / np.max(np.abs(mix))) * 0.98
    elif kind == "quiet_dynamic":
        mix = song("acoustic", seed, rate, seconds).astype(np.float64)
        swell = 10.0 ** (np.linspace(-35.0, 0.0, frames) / 20.0)
        out = mix * swell[:, None]
        out *= 10.0 ** (-12.0 / 20.0) / np.max(np.abs(out))
    elif kind == "bass_heavy":
        mix = song("rock", seed, rate, seconds).astype(np.float64) * 0.3
        kick = np.exp(-np.mod(t, 0.5) / 0.12)
        sub = np.sin(2 * np.pi * 45.0 * t) * (0.5 + 0.5 * kick)
        out = mix + 0.9 * sub[:, None]
        out *= 10.0 ** (-3.0 / 20.0) / np.max(np.abs(out))
    elif kind == "speech":
        out = _speech(t, rate, seed)
    elif kind == "loud_and_quiet":
        # The dense mix reads about -6 LUFS: 4 dB down, and 20 dB more for the quiet
        # sections, from 6 s to 12 s of every 12, with 50-ms ramps as a fader moves.
        mix = material("dense_loud", seconds, rate, seed).astype(np.float64)
        phase = np.mod(t, 12.0)
        quiet = np.minimum(
            np.clip((phase - 6.0) / 0.05, 0, 1), np.clip((12.0 - phase) / 0.05, 0, 1)
        )
        out = mix * (10.0 ** ((-4.0 - 20.0 * quiet) / 20.0))[:, None]
    else:
        raise ValueError(f"unknown material {kind!r}")
    return out.astype(np.float32)


def _speech(t: npt.NDArray[np.float64], rate: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    # A voice: a glottal pulse train around 120 Hz with a little jitter...
    pitch = 120.0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t)) * (1 + rng.normal(0, 0.003, t.size))
    phase = np.cumsum(pitch / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    voice = lfilter([1.0], [1.0, -0.97], pulses)
    # ...through three vowel formants that move from syllable to syllable...
    syllable = np.floor(t * 4.0).astype(int)
    formants = rng.uniform([300, 900, 2200], [800, 1800, 3000], size=(syllable.max() + 1, 3))
    shaped = np.zeros_like(voice)
    for index in range(formants.shape[0]):
        part = syllable == index
        for centre in formants[index]:
            b, a = butter(
                2, [centre * 0.9 / (rate / 2), min(centre * 1.1 / (rate / 2), 0.99)], "band"
            )
            shaped[part] += lfilter(b, a, voice)[part]
    # ...spoken in syllables with pauses between phrases, some breath noise, near mono.
    envelope = np.sin(np.pi * np.mod(t * 4.0, 1.0)) ** 2 * (np.mod(t, 3.0) < 2.4)
    mono = shaped * envelope + 0.003 * rng.standard_normal(t.size) * envelope
    mono *= 10.0 ** (-6.0 / 20.0) / np.max(np.abs(mono))
    side = 0.01 * rng.standard_normal(t.size) * envelope * np.max(np.abs(mono))
    return np.stack([mono + side, mono - side], axis=1)


def pcm16_wav_bytes(samples: npt.NDArray[np.floating], rate: int) -> bytes:
    """A 16-bit WAV file's bytes of (frames, channels) ``samples`` in [-1, 1], written
    with the standard library's ``wave`` (not the soundfile the service reads with)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sink:
        sink.setnchannels(samples.shape[1])
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def decaying_notes_wav(seconds: float, rate: int = 44_100, *, noise: float = 0.0) -> bytes:
    """A 16-bit stereo WAV file's bytes: a few decaying notes twice a second, peaking at
    0.3, with ``noise`` (white, that amplitude) to make each length's audio differ."""
    t = np.arange(int(seconds * rate)) / rate
    voice = np.exp(-3.0 * np.mod(t, 0.5)) * sum(np.sin(2 * np.pi * f * t) for f in (110, 220, 330))
    samples = np.stack([voice, 0.9 * voice], axis=1)
    if noise:
        rng = np.random.default_rng(int(seconds * 10))
        samples = samples + noise * rng.standard_normal((t.size, 2))
    samples *= 0.3 / np.max(np.abs(samples))
    return pcm16_wav_bytes(samples, rate)
