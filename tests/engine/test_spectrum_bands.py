"""One-third-octave band levels: tones land in their band, pink noise reads flat,
low-passed material drops at the top, and a full-scale sine reads 0 dB."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import butter, sosfilt

from mastering.engine.spectrum_bands import (
    BAND_CENTRES_HZ,
    EXACT_CENTRES_HZ,
    LOWER_EDGES_HZ,
    UPPER_EDGES_HZ,
    BandMeter,
    band_weights,
    fft_size,
    measurable,
)
from tests.audio_factory import sine

RATES = [44_100, 48_000, 96_000]


def _levels(samples: npt.NDArray[np.floating], rate: int, block: int = 1 << 17) -> np.ndarray:
    meter = BandMeter(rate, channels=samples.shape[1])
    for start in range(0, samples.shape[0], block):
        meter.push(samples[start : start + block])
    return np.array([np.nan if v is None else v for v in meter.levels_db()])


def _pink_noise(seconds: float, rate: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Gaussian noise whose power falls 3 dB per octave (equal power per band)."""
    frames = round(seconds * rate)
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(frames // 2 + 1) + 1j * rng.standard_normal(frames // 2 + 1)
    frequencies = np.fft.rfftfreq(frames, 1 / rate)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(frequencies[1:])
    noise = np.fft.irfft(spectrum, frames)
    noise *= 0.2 / np.std(noise)
    return np.stack([noise, 0.8 * noise], axis=1).astype(np.float32)


def test_the_bands_are_the_third_octaves_from_31_5_hz_to_16_khz() -> None:
    # Given the band list
    # Then it is 28 contiguous one-third-octave bands whose nominal centres round
    # the exact base-10 ones (1000 Hz * 10^(k/10))
    assert len(BAND_CENTRES_HZ) == 28
    assert (BAND_CENTRES_HZ[0], BAND_CENTRES_HZ[-1]) == (31.5, 16_000.0)
    np.testing.assert_allclose(BAND_CENTRES_HZ, EXACT_CENTRES_HZ, rtol=0.03)
    np.testing.assert_allclose(LOWER_EDGES_HZ[1:], UPPER_EDGES_HZ[:-1])
    np.testing.assert_allclose(UPPER_EDGES_HZ / LOWER_EDGES_HZ, 2 ** (1 / 3), rtol=0.001)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("offset", [0.0, -0.04, 0.04])
def test_a_tone_lands_in_its_band(rate: int, offset: float) -> None:
    # Given sines at each band's centre, and near its edges (a 25th of a decade
    # off centre; the band's edges are a 20th away)
    for index, centre in enumerate(EXACT_CENTRES_HZ):
        frequency = centre * 10**offset
        samples = sine(4.0, rate, freq=frequency, amplitude=0.5, phase=0.3)
        # When its bands are measured
        levels = _levels(samples, rate)
        # Then its own band is the loudest, and bands two away read at least 20 dB
        # lower (measured: 29.7 dB at worst, a tone at 34.7 Hz)
        assert int(np.argmax(levels)) == index, frequency
        two_away = [levels[i] for i in (index - 2, index + 2) if 0 <= i < len(levels)]
        assert levels[index] - max(two_away) >= 20.0, frequency


@pytest.mark.parametrize("rate", RATES)
def test_a_full_scale_sine_reads_0_db_in_its_band(rate: int) -> None:
    # Given a 997-Hz sine at full scale in both channels, and at -20 dBFS in one
    loud = sine(5.0, rate, freq=997.0, amplitude=1.0)
    one_side = sine(5.0, rate, freq=997.0, amplitude=0.1)
    one_side[:, 1] = 0.0
    # When their bands are measured
    # Then the first reads 0 dB in the 1-kHz band, the second 20 dB less and 3 dB
    # less again (the average of the two channels' power)
    assert _levels(loud, rate)[15] == pytest.approx(0.0, abs=0.05)
    assert _levels(one_side, rate)[15] == pytest.approx(-23.01, abs=0.05)


@pytest.mark.parametrize("rate", RATES)
def test_pink_noise_reads_flat(rate: int) -> None:
    # Given 30 s of pink noise (equal power in every one-third octave)
    samples = _pink_noise(30.0, rate)
    # When its bands are measured
    levels = _levels(samples, rate)
    # Then every band reads within 1 dB of their average (measured: 0.35 dB)
    assert np.all(np.abs(levels - levels.mean()) < 1.0), np.round(levels - levels.mean(), 2)


@pytest.mark.parametrize("rate", RATES)
def test_a_low_passed_signal_drops_in_the_top_bands(rate: int) -> None:
    # Given pink noise through a steep 2-kHz low-pass (8th-order Butterworth)
    noise = _pink_noise(20.0, rate)
    low_passed = sosfilt(butter(8, 2_000.0, fs=rate, output="sos"), noise, axis=0)
    # When both are measured
    before, after = _levels(noise, rate), _levels(low_passed.astype(np.float32), rate)
    # Then the bands well below the cut are untouched and those from 5 kHz up lose
    # at least 40 dB (an octave and more above it)
    np.testing.assert_allclose(after[:14], before[:14], atol=0.2)  # up to 800 Hz
    assert np.all(before[22:] - after[22:] > 40.0)  # 5 kHz and up


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("block", [999, 1000, 8_192, 77_777, 1 << 17])
def test_levels_do_not_depend_on_how_the_stream_is_cut(block: int, channels: int) -> None:
    # Given 10 s of pink noise (several of the meter's FFT batches) cut into blocks
    # of any size, that split its windows anywhere
    samples = np.ascontiguousarray(_pink_noise(10.0, 48_000)[:, :channels])
    # When it is measured block by block
    # Then it reads as in one piece, to float rounding (measured: identical)
    np.testing.assert_allclose(
        _levels(samples, 48_000, block), _levels(samples, 48_000, samples.shape[0]), atol=1e-6
    )


def _stft_band_power(samples: npt.NDArray[np.float32], rate: int) -> np.ndarray:
    """The definition computed directly (float64, the whole track at once): sine
    window of fft_size(rate) points, half-window hops, half a window of zeros before
    the first sample and zeros after the last, periodograms summed, then banded."""
    size = fft_size(rate)
    hop = size // 2
    frames, channels = samples.shape
    padded = np.concatenate(
        [np.zeros((hop, channels)), samples.astype(np.float64), np.zeros((size, channels))]
    )
    count = (hop + frames) // hop + 1
    window = np.sin(np.pi * (np.arange(size) + 0.5) / size)
    starts = np.arange(count)[:, None] * hop + np.arange(size)
    spectra = np.fft.rfft(padded[starts] * window[:, None], axis=1)
    periodogram = (np.abs(spectra) ** 2).sum(axis=(0, 2))
    return periodogram @ band_weights(rate, size) / (size * frames * channels)


@pytest.mark.parametrize("rate", [44_100, 96_000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("hops", [0.4, 7.0, 40.6])
def test_the_meter_is_the_short_time_fourier_transform_it_describes(
    rate: int, channels: int, hops: float
) -> None:
    # Given pink noise shorter than a window, exactly 7 hops long, and longer than a
    # batch of the meter's FFTs with a partial hop at the end
    frames = round(hops * fft_size(rate) // 2)
    samples = np.ascontiguousarray(_pink_noise(frames / rate, rate)[:, :channels])
    # When it is measured in blocks of the engine's size
    meter = BandMeter(rate, channels=channels)
    for start in range(0, frames, 1 << 17):
        meter.push(samples[start : start + (1 << 17)])
    # Then every measurable band holds what the definition computed in one go holds,
    # to float32 rounding (measured: 1.4e-7 relative, 6e-7 dB), and asking again
    # changes nothing
    expected = _stft_band_power(samples, rate)
    measured = measurable(rate)
    np.testing.assert_allclose(meter.band_power()[measured], expected[measured], rtol=1e-5)
    np.testing.assert_allclose(meter.band_power()[measured], expected[measured], rtol=1e-5)


def test_channels_in_anti_phase_read_as_their_channels() -> None:
    # Given a stereo sine whose right channel is the left inverted (a mid of nothing)
    samples = sine(5.0, 48_000, freq=440.0, amplitude=0.5)
    samples[:, 1] *= -1.0
    # When its bands are measured
    # Then it reads what either channel alone reads, not a cancelled sum
    np.testing.assert_allclose(_levels(samples, 48_000), _levels(samples[:, :1], 48_000), atol=1e-4)


@pytest.mark.parametrize(("rate", "measured"), [(32_000, 27), (22_050, 25), (8_000, 21)])
def test_bands_above_the_nyquist_frequency_have_no_level(rate: int, measured: int) -> None:
    # Given a track at a low sample rate
    samples = _pink_noise(5.0, rate)
    # When its bands are measured
    levels = BandMeter(rate, channels=2)
    levels.push(samples)
    readings = levels.levels_db()
    # Then the list keeps every band (one plot axis for every track), and those that
    # do not fit under the Nyquist frequency read None
    assert len(readings) == len(BAND_CENTRES_HZ)
    assert all(value is not None for value in readings[:measured])
    assert all(value is None for value in readings[measured:])


def test_silence_has_no_level_in_any_band() -> None:
    # Given digital silence
    meter = BandMeter(44_100, channels=2)
    meter.push(np.zeros((44_100 * 3, 2), dtype=np.float32))
    # Then no band has a level
    assert meter.levels_db() == [None] * len(BAND_CENTRES_HZ)
