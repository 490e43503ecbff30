"""Each streamed stage equals its whole-array counterpart (matchering's, scipy's,
pyloudnorm's), whatever the block size."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import fftconvolve

from mastering.engine.dsp import FirStream
from mastering.engine.limiter import design_limiter, gain_envelope, hard_clip_gain
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.params import THRESHOLD
from tests.audio_factory import tone_mix
from tests.engine.conftest import engine_master


def test_fir_stream_equals_fftconvolve() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((50_000, 2)).astype(np.float32)
    taps = rng.standard_normal((4096, 2))
    stream = FirStream(taps, in_channels=2)
    pieces = [stream.push(signal[s : s + 7_777]) for s in range(0, 50_000, 7_777)]
    pieces.append(stream.push(np.zeros((4095, 2), np.float32)))
    ours = np.concatenate(pieces)
    for channel in range(2):
        theirs = fftconvolve(signal[:, channel].astype(np.float64), taps[:, channel])
        np.testing.assert_allclose(ours[:, channel], theirs, atol=2e-3 * np.max(np.abs(theirs)))


@pytest.mark.parametrize("block", [1_000, 7_777, 1 << 17])
def test_fir_stream_written_inputs_equal_fftconvolve(block: int) -> None:
    # Given a stream sized for the block (blocks shorter than the FIR included)
    rng = np.random.default_rng(block)
    signal = rng.standard_normal((50_000, 2)).astype(np.float32)
    taps = rng.standard_normal((4096, 2))
    stream = FirStream(taps, in_channels=2, block=block)
    # When each block is written into the stream's inputs, then the tail's zeros
    pieces = []
    for start in range(0, 50_000, block):
        chunk = signal[start : start + block]
        stream.inputs(chunk.shape[0])[...] = chunk.T
        pieces.append(stream.push_inputs().copy())
    stream.inputs(4095)[...] = 0.0
    pieces.append(stream.push_inputs().copy())
    ours = np.concatenate(pieces, axis=1)
    # Then the channel-major outputs are the full convolution
    for channel in range(2):
        theirs = fftconvolve(signal[:, channel].astype(np.float64), taps[:, channel])
        np.testing.assert_allclose(ours[channel], theirs, atol=1e-5 * np.max(np.abs(theirs)))


@pytest.mark.parametrize(("rate", "block"), [(44_100, 3_000), (44_100, 1 << 17), (48_000, 5_001)])
def test_limiter_envelope_equals_matchering(rate: int, block: int) -> None:
    from matchering import Config
    from matchering.limiter import limit

    # A signal well over the ceiling in places, so every limiter stage works.
    signal = tone_mix(4.0, rate, seed=3).astype(np.float64) * 3.0
    config = Config(internal_sample_rate=rate)
    theirs = limit(signal, config)

    def source(start: int, stop: int) -> np.ndarray:
        return hard_clip_gain(np.max(np.abs(signal[start:stop]), axis=1))

    gain = np.concatenate(
        [g for _, _, g in gain_envelope(source, signal.shape[0], design_limiter(rate), block)]
    )
    np.testing.assert_allclose(signal * gain[:, None], theirs, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(signal * gain[:, None])) <= THRESHOLD + 1e-12


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (48_000, 1), (96_000, 2)])
def test_loudness_meter_equals_pyloudnorm(rate: int, channels: int) -> None:
    samples = tone_mix(9.7, rate, channels=channels, seed=4)
    meter = LoudnessMeter(rate, channels=channels, frames=samples.shape[0])
    for start in range(0, samples.shape[0], 33_333):
        meter.push(samples[start : start + 33_333])
    expected = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    assert meter.integrated() == pytest.approx(expected, abs=0.005)


def test_master_does_not_depend_on_the_block_size() -> None:
    target = tone_mix(8.0, 48_000, seed=6, peak_dbfs=-14.0)
    reference = tone_mix(8.0, 44_100, seed=7, peak_dbfs=-0.5)
    big, _ = engine_master(target, 48_000, reference, 44_100)
    small, _ = engine_master(target, 48_000, reference, 44_100, block_frames=10_007)
    np.testing.assert_allclose(small, big, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2])
def test_level_analysis_spectra_of_the_loudest_pieces_only_change_nothing(channels: int) -> None:
    from mastering.engine.analysis import (
        _levels,
        _mid_side_rows,
        analyze_levels,
    )
    from mastering.engine.dsp import PieceLayout, internal_frames
    from mastering.engine.params import FFT_SIZE

    # Given 70 s at 44.1 kHz whose pieces differ in level (some loud, some not)
    rate = 44_100
    samples = tone_mix(70.0, rate, seed=channels)[:, :channels]
    samples *= np.repeat(np.linspace(0.2, 1.0, 7), samples.shape[0] // 7 + 1)[
        : samples.shape[0], None
    ].astype(np.float32)
    layout = PieceLayout.for_frames(internal_frames(samples.shape[0], rate))
    # When the 44.1 kHz analysis measures every piece's RMS, then only the loudest
    # pieces' spectra
    ours = analyze_levels(samples, rate, role="target")
    # Then every reading equals, to the bit, that of measuring every piece's spectra
    # as the pieces go by (the path of the other rates)
    buffer = np.empty((2, layout.piece_size), dtype=np.float32)
    size = layout.piece_size
    every = _levels(
        (
            _mid_side_rows(samples[i * size : (i + 1) * size], buffer)
            for i in range(layout.divisions)
        ),
        layout,
        layout,
        rate,
        FFT_SIZE,
        samples,
    )
    assert 0 < int(ours.loudest.sum()) < layout.divisions
    for field in ("piece_rms", "loudest", "match_rms", "mid_spectrum", "side_spectrum", "peak"):
        assert np.array_equal(getattr(ours, field), getattr(every, field)), field
