"""The numpy-only replacements for scipy.signal, scipy.interpolate and pyloudnorm's
filters equal the originals (the engine avoids importing those: about 1.4 s a job)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pyloudnorm
import pytest
from pyloudnorm.iirfilter import IIRfilter
from scipy.interpolate import interp1d
from scipy.signal import butter, lfilter, lfilter_zi, sosfilt
from scipy.signal.windows import hann as scipy_hann

from mastering.engine import iir
from mastering.engine.eq import hann
from mastering.engine.loudness import LoudnessMeter, k_weighting
from mastering.engine.spline import CubicSpline
from tests.audio_factory import tone_mix

RATES = [8_000, 22_050, 44_100, 48_000, 96_000, 192_000]


@pytest.mark.parametrize(
    ("b", "a"),
    [
        butter(1, 7.0, fs=44_100),
        butter(1, 800.0 / 3000.0, fs=96_000),
        ([1.0 - 0.956], [1.0, -0.956]),
        butter(4, 0.1),
    ],
)
@pytest.mark.parametrize("frames", [1, 5, 31, 32, 33, 1_000, 12_295, 100_003])
def test_lfilter_equals_scipy(b: np.ndarray, a: np.ndarray, frames: int) -> None:
    rng = np.random.default_rng(frames)
    signal = rng.standard_normal(frames)
    state = rng.standard_normal(len(a) - 1)
    expected, expected_state = lfilter(b, a, signal, zi=state)
    ours, ours_state = iir.lfilter(b, a, signal, state)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10 * np.max(np.abs(expected)))
    np.testing.assert_allclose(ours_state, expected_state, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(iir.lfilter_zi(b, a), lfilter_zi(b, a), rtol=1e-12, atol=1e-15)


def test_block_filter_streams_a_cascade_like_sosfilt() -> None:
    # Given K-weighting as a cascade, fed in uneven blocks, with two channels
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((70_001, 2))
    sections = k_weighting(48_000)
    sos = np.array([[*b, *a] for b, a in sections])
    design = iir.BlockFilter(sections)
    state = design.zeros(2)
    pieces = []
    for start in range(0, signal.shape[0], 9_999):
        piece, state = design.apply(signal[start : start + 9_999], state)
        pieces.append(piece)
    # Then the output is sosfilt's, and so is the final state (sections' zi in order)
    expected, expected_state = sosfilt(sos, signal, axis=0, zi=np.zeros((2, 2, 2)))
    np.testing.assert_allclose(np.concatenate(pieces), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(state, expected_state.reshape(4, 2), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rate", RATES)
def test_first_order_butterworth_equals_scipy(rate: int) -> None:
    for cutoff in (7.0, 800.0 / 3000.0):
        b, a = iir.butter_lowpass_first_order(cutoff, rate)
        expected_b, expected_a = butter(1, cutoff, fs=rate)
        np.testing.assert_allclose(b, expected_b, rtol=1e-14)
        np.testing.assert_allclose(a, expected_a, rtol=1e-14)


@pytest.mark.parametrize("rate", RATES)
def test_k_weighting_is_pyloudnorms(rate: int) -> None:
    (shelf_b, shelf_a), (pass_b, pass_a) = k_weighting(rate)
    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, rate, "high_pass")
    # The same expressions in the same order: bit for bit.
    assert np.array_equal(shelf_b, shelf.b)
    assert np.array_equal(shelf_a, shelf.a)
    assert np.array_equal(pass_b, high_pass.b)
    assert np.array_equal(pass_a, high_pass.a)


@pytest.mark.parametrize("rate", [8_000, 44_100, 192_000])
def test_loudness_meter_agrees_with_pyloudnorm_to_a_thousandth(rate: int) -> None:
    samples = tone_mix(3.3, rate, seed=9) * np.float32(0.3)
    meter = LoudnessMeter(rate, channels=2, frames=samples.shape[0])
    for start in range(0, samples.shape[0], 40_000):
        meter.push(samples[start : start + 40_000])
    expected = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    assert meter.integrated() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("length", [1, 2, 5, 4096, 4458, 17_832])
def test_hann_equals_scipy(length: int) -> None:
    assert np.array_equal(hann(length), scipy_hann(length))


def test_cubic_spline_equals_interp1d_on_the_eq_grids() -> None:
    # Given matchering's linear and log grids and a rough curve on each
    rng = np.random.default_rng(2)
    linear = 22_050 * np.linspace(0, 1, 2049)
    log = 22_050 * np.logspace(np.log10(4 / 4096), 0, 8193)
    ratio = np.exp(rng.standard_normal(2049))
    smooth = np.cumsum(rng.standard_normal(8193))
    wanted = np.linspace(0, 48_000, 4459)  # past the end: extrapolation
    # Then both interpolations equal scipy's cubic interp1d to rounding
    expected = interp1d(linear, ratio, "cubic")(log)
    np.testing.assert_allclose(CubicSpline(linear, ratio)(log), expected, rtol=1e-12)
    expected = interp1d(log, smooth, "cubic", fill_value="extrapolate")(wanted)
    ours = CubicSpline(log, smooth)(wanted)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12 * np.max(np.abs(expected)))


def test_cubic_spline_refuses_unsorted_or_short_input() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        CubicSpline([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        CubicSpline([0.0, 2.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("backend", ["compiled", "scipy.fft"])
def test_engine_ffts_are_scipy_ffts_in_float32(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scipy.fft

    from mastering.engine import fft

    # Given the engine's transforms: scipy's compiled FFTs loaded alone (what runs
    # here) or, where scipy's layout ever differs, scipy.fft itself
    monkeypatch.setattr(fft, "_TRANSFORMS", None)
    if backend == "scipy.fft":
        monkeypatch.setattr(fft, "_load_compiled", lambda: None)
        assert fft.backend() == "scipy.fft"
    else:
        assert fft.backend() in ("pyduccfft", "pypocketfft")
    # And float32 windows (a strided view, as the convolution makes them) and taps
    rng = np.random.default_rng(4)
    windows = rng.standard_normal((3, 16_384, 2)).astype(np.float32)
    strided = windows[:, ::2, :]
    # Then every transform is scipy.fft's to the bit, in single precision for float32
    spectra = fft.rfft(windows, axis=1)
    assert spectra.dtype == np.complex64
    assert np.array_equal(spectra, scipy.fft.rfft(windows, axis=1))
    assert np.array_equal(fft.rfft(strided, axis=-2), scipy.fft.rfft(strided, axis=-2))
    back = fft.irfft(spectra, n=16_384, axis=1)
    assert back.dtype == np.float32
    assert np.array_equal(back, scipy.fft.irfft(spectra, n=16_384, axis=1))
    assert np.array_equal(
        fft.irfft(spectra, n=1_000, axis=1), scipy.fft.irfft(spectra, n=1_000, axis=1)
    )
    taps = rng.standard_normal((4_458, 2))
    assert np.array_equal(fft.rfft(taps, n=16_384, axis=0), scipy.fft.rfft(taps, n=16_384, axis=0))
    assert np.array_equal(fft.rfft(taps, n=1_024, axis=0), scipy.fft.rfft(taps, n=1_024, axis=0))
    # And so is every other input a call site may pass: float32 padded by n (the FIR
    # spectra), read-only overlapping windows (the convolution), a complex128 spectrum
    # zero-padded by n (the preset renderer), other dtypes converted as scipy converts
    short = taps[:1_000].astype(np.float32)
    assert np.array_equal(fft.rfft(short, n=4_096, axis=0), scipy.fft.rfft(short, n=4_096, axis=0))
    flat = windows[0, :, 0]
    overlapping = np.lib.stride_tricks.as_strided(
        flat, shape=(7, 4_096), strides=(2_000 * 4, 4), writeable=False
    )
    assert np.array_equal(fft.rfft(overlapping, axis=1), scipy.fft.rfft(overlapping, axis=1))
    wide = scipy.fft.rfft(taps, axis=0)
    assert np.array_equal(fft.irfft(wide, n=9_000, axis=0), scipy.fft.irfft(wide, n=9_000, axis=0))
    for odd in (short.astype(">f4"), short.astype(np.float16), (short * 100).astype(np.int32)):
        ours = fft.rfft(odd, axis=0)
        assert ours.dtype == scipy.fft.rfft(odd, axis=0).dtype
        assert np.array_equal(ours, scipy.fft.rfft(odd, axis=0))
    real_spectrum = spectra.real
    assert np.array_equal(
        fft.irfft(real_spectrum, n=16_384, axis=1), scipy.fft.irfft(real_spectrum, n=16_384, axis=1)
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda fft, x: fft.rfft(x, axis=2), IndexError),
        (lambda fft, x: fft.rfft(x, axis=-3), IndexError),
        (lambda fft, x: fft.rfft(x, axis=1, n=0), ValueError),
        (lambda fft, x: fft.rfft(x[:, :0], axis=1), ValueError),
        (lambda fft, x: fft.irfft(x.astype(np.complex64), axis=1, n=-4), ValueError),
        (lambda fft, x: fft.rfft(x.astype(np.complex64), axis=1), TypeError),
    ],
)
def test_engine_ffts_refuse_what_scipy_fft_refuses(call: Any, error: type[Exception]) -> None:
    import scipy.fft

    from mastering.engine import fft

    # Given a (3, 16) float32 array and a call scipy.fft refuses (an axis out of range,
    # no points, a complex input to a real transform)
    x = np.ones((3, 16), dtype=np.float32)
    # Then the engine's transforms refuse it too, rather than wrap the axis or return
    # uninitialised memory
    with pytest.raises(error):
        call(fft, x)
    with pytest.raises(error):
        call(scipy.fft, x)


def test_compiled_ffts_loaded_alone_are_the_module_scipy_fft_uses() -> None:
    # Given a fresh process (this one imported scipy.fft long ago) where the engine
    # loads its transforms first, as a job does
    probe = (
        "import importlib, sys\n"
        "from mastering.engine import fft\n"
        "module = fft._load_compiled()\n"
        "assert 'scipy.fft' not in sys.modules\n"
        # When scipy.fft is imported afterwards (pyloudnorm or matchering in one process)
        "folder = module.__name__.rsplit('.', 2)[1]\n"
        "scipy_basic = importlib.import_module(f'scipy.fft.{folder}.basic')\n"
        # Then it works on the very same compiled module, not a second copy
        "assert scipy_basic.pfft.r2c is module.r2c\n"
        "print(module.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().rsplit(".", 1)[-1] in ("pyduccfft", "pypocketfft")


@pytest.mark.parametrize("size", [1, 2, 44, 89, 1_000])
def test_sliding_max_equals_maximum_filter1d(size: int) -> None:
    from scipy.ndimage import maximum_filter1d

    from mastering.engine.dsp import sliding_max

    values = np.random.default_rng(size).random(12_345)
    # Windows [j, j + size) are maximum_filter1d's around j + size // 2.
    expected = maximum_filter1d(values, size=size)[size // 2 : size // 2 + 12_345 - size + 1]
    assert np.array_equal(sliding_max(values, size), expected)


@pytest.mark.parametrize("channels", [1, 2])
def test_float32_mid_side_is_mid_side_rounded(channels: int) -> None:
    from mastering.engine.dsp import mid_side, sum_and_difference

    block = (np.random.default_rng(channels).standard_normal((100_000, channels)) * 0.4).astype(
        np.float32
    )
    mid, side = mid_side(block)
    # Halved sums and differences, as the EQ stage takes them (its FIRs halve them)
    ours = sum_and_difference(block, np.empty((block.shape[0], 2), dtype=np.float32)) * 0.5
    assert np.array_equal(ours[:, 0], mid.astype(np.float32))
    assert np.array_equal(ours[:, 1], side.astype(np.float32))


@pytest.mark.parametrize("channels", [1, 2])
def test_analysis_mid_side_rows_are_mid_side_rounded(channels: int) -> None:
    from mastering.engine.analysis import _mid_side_rows
    from mastering.engine.dsp import mid_side

    # Given a float32 block with 24-bit-like values (their sums need rounding)
    block = (np.random.default_rng(channels).standard_normal((100_000, channels)) * 0.4).astype(
        np.float32
    )
    # When the level analysis splits it into mid and side rows of a reused buffer
    buffer = np.full((2, block.shape[0]), np.nan, dtype=np.float32)
    ours_mid, ours_side = _mid_side_rows(block, buffer)
    # Then they are matchering's float64 mid and side, rounded once to float32
    mid, side = mid_side(block)
    assert np.array_equal(ours_mid, mid.astype(np.float32))
    assert np.array_equal(ours_side, side.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frames", [1, 31, 32, 33, 150])
def test_frame_magnitude_sum_in_batches_is_the_whole_pieces_sum(
    dtype: type[np.floating], frames: int
) -> None:
    from mastering.engine import fft
    from mastering.engine.analysis import frame_magnitude_sum

    # Given a piece of whole frames and a remainder, in float32 or float64
    frame = 256
    signal = np.random.default_rng(frames).standard_normal(frames * frame + 100).astype(dtype)
    # When its frames' magnitude spectra are summed batch by batch
    ours = frame_magnitude_sum(signal, frame)
    # Then the sum is that of one float32 FFT of all its whole frames, to float64 rounding
    framed = signal[: frames * frame].astype(np.float32).reshape(frames, frame)
    expected = np.abs(np.fft.rfft(framed.astype(np.float64), axis=1)).sum(axis=0) / frame
    np.testing.assert_allclose(ours, expected, rtol=2e-6)
    whole = np.abs(fft.rfft(framed, axis=1)).sum(axis=0, dtype=np.float64) / frame
    np.testing.assert_allclose(ours, whole, rtol=1e-12)
