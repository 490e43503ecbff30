"""Level and spectrum analysis: what matchering's ``analyze_levels`` and ``get_fir``
derive from a track, computed one 15-second piece at a time.

matchering cuts a track (at 44.1 kHz) into equal pieces of at most 15 s, keeps those
whose mid RMS is at least the RMS of all pieces' RMS values (the "loudest"), and uses
their RMS and their average magnitude spectrum (4096-point boxcar frames, no overlap).
Those are per-piece statistics, so each piece is read, measured and dropped: memory
does not depend on the track's length. At 44.1 kHz, where reading a piece again costs
nothing, the RMS of every piece comes first and the spectra of the loudest only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mastering.engine import fft
from mastering.engine.dsp import (
    BLOCK_FRAMES,
    FirStream,
    Float32Array,
    Float64Array,
    FloatArray,
    PieceLayout,
    internal_frames,
    mid_side,
    sum_and_difference,
)
from mastering.engine.eq import fir_length
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.params import FFT_SIZE, INTERNAL_RATE, MIN_VALUE, THRESHOLD
from mastering.engine.profile import ReferenceProfile
from mastering.engine.resampler import Resampler, band_limit_taps, internal_length
from mastering.engine.track_analysis import TrackAnalysis
from mastering.errors import AudioTooShort
from mastering.track import Track, sample_peak

# Frames per FFT call in ``frame_magnitude_sum`` (measured: 32 to 64 are fastest).
_FFT_BATCH = 32


@dataclass(frozen=True)
class LevelAnalysis:
    """One track's loudest-piece statistics; spectra on the 44.1 kHz analysis bins."""

    layout: PieceLayout  # at the track's own rate
    piece_rms: Float64Array
    loudest: npt.NDArray[np.bool_]
    match_rms: float
    # Average |STFT| / FFT_SIZE of the loudest pieces (matchering's __average_fft).
    mid_spectrum: Float64Array
    side_spectrum: Float64Array
    # Sample peak of the whole track, both channels.
    peak: float


def rms(values: Float64Array) -> float:
    """matchering's rms(): root of the mean square."""
    return float(np.sqrt(values @ values / values.shape[0]))


def loudest_pieces(piece_rms: Float64Array) -> tuple[npt.NDArray[np.bool_], float]:
    """Pieces at least as loud as the RMS of all pieces' RMS, and their RMS."""
    loudest = piece_rms >= rms(piece_rms)
    return loudest, rms(piece_rms[loudest])


def frame_magnitude_sum(
    signal: FloatArray, frame: int, scratch: _FrameScratch | None = None
) -> Float64Array:
    """Sum over whole ``frame``-sample frames of |rfft| / frame (scipy.signal.stft's
    "spectrum" scaling with a boxcar window, as matchering calls it), from float32
    FFTs (twice as fast as float64, and ~1e-7 on an average spectrum is nothing).

    The frames go through in batches of ``_FFT_BATCH``: a whole piece's spectra would
    be megabytes of fresh memory per call (page faults cost more than the FFT), a
    batch's stay in the allocator's reach and in cache; ``scratch`` holds the float32
    frames (for a float64 ``signal``) and magnitudes between calls."""
    frames = signal.shape[0] // frame
    framed = signal[: frames * frame].reshape(frames, frame)
    if scratch is None:
        scratch = _FrameScratch(frame)
    total = np.zeros(frame // 2 + 1)
    for start in range(0, frames, _FFT_BATCH):
        batch = framed[start : start + _FFT_BATCH]
        if batch.dtype != np.float32:
            batch = scratch.frames(batch)
        spectra = fft.rfft(batch, axis=1)
        magnitudes = np.abs(spectra, out=scratch.magnitudes[: batch.shape[0]])
        total += np.add.reduce(magnitudes, axis=0, dtype=np.float64)
    total /= frame
    return total


class _FrameScratch:
    """Buffers ``frame_magnitude_sum`` reuses from one batch of frames to the next."""

    def __init__(self, frame: int) -> None:
        self.magnitudes = np.empty((_FFT_BATCH, frame // 2 + 1), dtype=np.float32)
        self._frames = np.empty((_FFT_BATCH, frame), dtype=np.float32)

    def frames(self, batch: FloatArray) -> Float32Array:
        """``batch`` rounded to float32, in the reused buffer."""
        out = self._frames[: batch.shape[0]]
        np.copyto(out, batch, casting="same_kind")
        return out


def _piece_energy(mid: FloatArray) -> float:
    """Sum of squares of ``mid``, accumulated in float64: a float32 piece squared in
    float64 by ``einsum``, without a float64 copy of the piece. (Its float32 mid is
    matchering's float64 one exactly for 16-bit sources, rounded by ~6e-8 for 24-bit:
    nothing on an RMS.)"""
    if mid.dtype == np.float64:
        return float(mid @ mid)
    return float(np.einsum("i,i->", mid, mid, dtype=np.float64))


def _mid_side_rows(block: FloatArray, out: Float32Array) -> tuple[Float32Array, Float32Array]:
    """(mid, side) of a (frames, 1 | 2) float32 block as the rows of ``out`` (2, frames):
    ``mid_side`` rounded to float32, without its float64 temporaries (a test compares)."""
    sum_and_difference(block, out.T)
    out *= np.float32(0.5)
    return out[0], out[1]


def _mid_row(block: FloatArray, out: Float32Array) -> Float32Array:
    """The mid row of ``_mid_side_rows`` alone (the same values) into ``out``."""
    if block.shape[1] == 1:
        np.copyto(out, block[:, 0])
    else:
        np.add(block[:, 0], block[:, 1], out=out)
        out *= np.float32(0.5)
    return out


def _band_limited_pieces(
    samples: FloatArray, layout: PieceLayout, rate: int
) -> Iterator[tuple[Float64Array, Float64Array]]:
    """Each piece's mid and side at ``rate`` as matchering's resampling leaves them:
    through resampy's filter (``band_limit_taps``), zeros beyond the track's ends as
    resampy, each piece filtered with its neighbours' samples around it."""
    taps = band_limit_taps(rate)
    half = taps.shape[0] // 2
    frames, size = samples.shape[0], layout.piece_size
    for index in range(layout.divisions):
        start, stop = index * size, (index + 1) * size
        lo, hi = max(start - half, 0), min(stop + half, frames)
        mid, side = mid_side(samples[lo:hi])
        stream = FirStream(np.stack([taps, taps], axis=1), in_channels=2)
        # Full convolution, then the outputs centred on [start, stop).
        full = np.concatenate(
            [
                stream.push(np.stack([mid, side], axis=1)),
                stream.push(np.zeros((taps.shape[0] - 1, 2), dtype=np.float32)),
            ]
        )
        centred = full[start - lo + half : stop - lo + half].astype(np.float64)
        yield centred[:, 0], centred[:, 1]


def _on_internal_grid(spectrum: Float64Array, rate: int, frame: int) -> Float64Array:
    """A spectrum measured with ``frame``-point FFTs at ``rate``, on matchering's
    44.1 kHz / 4096-point bins (the bin spacing is nearly the same; interpolated).
    Bins past the track's own Nyquist are empty, as in a resampled track."""
    if rate == INTERNAL_RATE:
        return spectrum
    ours = np.arange(spectrum.shape[0]) * (rate / frame)
    wanted = np.arange(FFT_SIZE // 2 + 1) * (INTERNAL_RATE / FFT_SIZE)
    mapped: Float64Array = np.interp(wanted, ours, spectrum, right=0.0)
    return mapped


def analyze_levels(samples: FloatArray, rate: int, *, role: str) -> LevelAnalysis:
    """Loudest-piece statistics of (frames, 1 | 2) ``samples`` at ``rate``.

    matchering resamples to 44.1 kHz first: so does this analysis, piece by piece, for
    a track at another rate (``_resampled_pieces``). Only at a rate without a small
    period against 44.1 kHz is the track measured at its own rate, through the same
    filter, with pieces and FFT frames of the same durations (so the same bin
    spacing), and its spectra mapped onto the 44.1 kHz bins.
    """
    if internal_frames(samples.shape[0], rate) < FFT_SIZE:
        raise AudioTooShort(f"The {role} is too short to master")
    layout = PieceLayout.for_frames(internal_frames(samples.shape[0], rate))
    if rate == INTERNAL_RATE:
        return _own_rate_levels(samples, layout)
    layout = layout.scaled(samples.shape[0])
    if Resampler.available(rate):
        measured = PieceLayout.for_frames(internal_length(samples.shape[0], rate))
        resampled = _resampled_pieces(samples, rate, measured)
        return _levels(resampled, measured, layout, INTERNAL_RATE, FFT_SIZE, samples)
    band_limited = _band_limited_pieces(samples, layout, rate)
    return _levels(band_limited, layout, layout, rate, fir_length(rate), samples)


def _own_rate_levels(samples: FloatArray, layout: PieceLayout) -> LevelAnalysis:
    """``_levels`` at 44.1 kHz, where a piece costs nothing to read again: every
    piece's RMS first (its mid alone), then the spectra of the loudest pieces only, the
    only ones kept (about half of them: the FFTs were most of this analysis). The same
    values to the bit as measuring every piece."""
    size, frame = layout.piece_size, FFT_SIZE
    buffer = np.empty((2, size), dtype=np.float32)
    piece_rms = np.empty(layout.divisions)
    for piece in range(layout.divisions):
        mid = _mid_row(_own_rate_piece(samples, layout, piece), buffer[0])
        piece_rms[piece] = np.sqrt(_piece_energy(mid) / size)
    loudest, _ = loudest_pieces(piece_rms)
    mid_sums = np.zeros((layout.divisions, frame // 2 + 1))
    side_sums = np.zeros_like(mid_sums)
    scratch = _FrameScratch(frame)
    for loud in np.flatnonzero(loudest).tolist():
        mid, side = _mid_side_rows(_own_rate_piece(samples, layout, loud), buffer)
        mid_sums[loud] = frame_magnitude_sum(mid, frame, scratch)
        side_sums[loud] = frame_magnitude_sum(side, frame, scratch)
    return _level_analysis(
        layout, size, piece_rms, mid_sums, side_sums, INTERNAL_RATE, frame, samples
    )


def _own_rate_piece(samples: FloatArray, layout: PieceLayout, index: int) -> Float32Array:
    size = layout.piece_size
    block = samples[index * size : (index + 1) * size]
    piece: Float32Array = block if block.dtype == np.float32 else block.astype(np.float32)
    return piece


def _levels(
    pieces: Iterable[tuple[FloatArray, FloatArray]],
    measured: PieceLayout,
    layout: PieceLayout,
    rate: int,
    frame: int,
    samples: FloatArray,
) -> LevelAnalysis:
    """Loudest-piece statistics from the (mid, side) of each piece of ``measured``,
    at ``rate`` with ``frame``-point FFTs; ``layout`` is what the later stages use.
    Every piece is measured as it goes by: these pieces are costly to make twice."""
    size = measured.piece_size
    piece_rms = np.empty(measured.divisions)
    mid_sums = np.empty((measured.divisions, frame // 2 + 1))
    side_sums = np.empty_like(mid_sums)
    scratch = _FrameScratch(frame)
    for index, (mid, side) in enumerate(pieces):
        piece_rms[index] = np.sqrt(_piece_energy(mid) / size)
        mid_sums[index] = frame_magnitude_sum(mid, frame, scratch)
        side_sums[index] = frame_magnitude_sum(side, frame, scratch)
    return _level_analysis(layout, size, piece_rms, mid_sums, side_sums, rate, frame, samples)


def _level_analysis(
    layout: PieceLayout,
    piece_size: int,
    piece_rms: Float64Array,
    mid_sums: Float64Array,
    side_sums: Float64Array,
    rate: int,
    frame: int,
    samples: FloatArray,
) -> LevelAnalysis:
    """The analysis from each measured piece's RMS and spectrum sums (only the loudest
    pieces' sums are read), ``piece_size`` frames at ``rate``."""
    loudest, match_rms = loudest_pieces(piece_rms)
    averaged = int(np.count_nonzero(loudest)) * (piece_size // frame)
    return LevelAnalysis(
        layout=layout,
        piece_rms=piece_rms,
        loudest=loudest,
        match_rms=match_rms,
        mid_spectrum=_on_internal_grid(mid_sums[loudest].sum(axis=0) / averaged, rate, frame),
        side_spectrum=_on_internal_grid(side_sums[loudest].sum(axis=0) / averaged, rate, frame),
        # The reference's normalisation needs the peak of the whole track.
        peak=sample_peak(samples),
    )


def _resampled_pieces(
    samples: FloatArray, rate: int, internal: PieceLayout
) -> Iterator[tuple[Float64Array, Float64Array]]:
    """The (mid, side) of each piece of the track resampled to 44.1 kHz as resampy
    does, one 44.1 kHz piece at a time (``Resampler``: the piece's outputs from the
    samples around it), so matchering's pieces, RMS and 4096-point spectra come out
    exactly, leakage included."""
    resampler = Resampler(rate)
    size = internal.piece_size
    # The input span a piece's outputs need, with the kernel's reach either side.
    reach = resampler.reach
    for index in range(internal.divisions):
        first, stop = index * size, (index + 1) * size
        lo = max(int(first * rate / INTERNAL_RATE) - reach, 0)
        hi = min(int(stop * rate / INTERNAL_RATE) + reach + 1, samples.shape[0])
        mid, side = mid_side(samples[lo:hi])
        yield (
            resampler.outputs(mid, first, stop, offset=lo),
            resampler.outputs(side, first, stop, offset=lo),
        )


def normalization_coefficient(peak: float) -> float:
    """matchering's normalize_reference: a reference peaking under the limiter ceiling
    is raised to it, and the master is later scaled down by the same factor."""
    if peak < THRESHOLD:
        return max(MIN_VALUE, peak / THRESHOLD)
    return 1.0


def audio_fingerprint(audio: Track) -> str:
    """sha256 of the decoded audio: rate, shape and float32 samples, in one pass."""
    digest = hashlib.sha256()
    digest.update(f"{audio.sample_rate}:{audio.frames}:{audio.channels}:".encode())
    samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
    digest.update(samples.data.cast("B"))
    return digest.hexdigest()


def integrated_loudness(samples: FloatArray, rate: int) -> float | None:
    """Integrated loudness (BS.1770-4, as pyloudnorm) measured block by block."""
    meter = LoudnessMeter(rate, channels=samples.shape[1], frames=samples.shape[0])
    for start in range(0, samples.shape[0], BLOCK_FRAMES):
        meter.push(samples[start : start + BLOCK_FRAMES])
    return meter.integrated()


def analyze(reference: Track, *, meters: TrackAnalysis | None = None) -> ReferenceProfile:
    """The reference's profile: everything mastering against it needs. ``meters``, the
    reference's own analysis when the caller has it, is kept in the profile (its
    ``analysis``) and gives its loudness without measuring it again."""
    levels = analyze_levels(reference.samples, reference.sample_rate, role="reference")
    coefficient = normalization_coefficient(levels.peak)
    if meters is None:
        lufs = integrated_loudness(reference.samples, reference.sample_rate)
    else:
        lufs = meters.lufs
    # matchering divides the reference by the coefficient before analysing it; spectra
    # and RMS are linear in the signal, so dividing the results is the same.
    return ReferenceProfile(
        mid_spectrum=tuple((levels.mid_spectrum / coefficient).tolist()),
        side_spectrum=tuple((levels.side_spectrum / coefficient).tolist()),
        match_rms=levels.match_rms / coefficient,
        amplitude_coefficient=coefficient,
        sample_rate=reference.sample_rate,
        channels=reference.channels,
        frames=reference.frames,
        lufs=lufs,
        peak=levels.peak,
        fingerprint=audio_fingerprint(reference),
        analysis=None if meters is None else meters.to_public(),
    )
