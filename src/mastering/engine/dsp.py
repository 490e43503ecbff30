"""Small DSP building blocks the engine's stages are made of.

Everything here works on bounded blocks, so memory never grows with the track:
mid/side conversion, matchering's piece layout, a streaming FFT convolution
(overlap-save), and edge fades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mastering.engine import fft
from mastering.engine.params import INTERNAL_RATE, MAX_PIECE_FRAMES

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.floating]

# Frames per block of streamed work: ~3 s at 44.1 kHz, a few MB per temporary.
BLOCK_FRAMES = 1 << 17


def mid_side(block: FloatArray) -> tuple[Float64Array, Float64Array]:
    """(mid, side) of a (frames, 1 | 2) block in float64, as matchering's lr_to_ms.

    A mono block is matchering's mono_to_stereo: mid is the signal, side is zero.
    """
    left = block[:, 0].astype(np.float64)
    if block.shape[1] == 1:
        return left, np.zeros_like(left)
    mid = left + block[:, 1]
    mid *= 0.5
    side = mid - block[:, 1]
    return mid, side


@dataclass(frozen=True)
class PieceLayout:
    """matchering's split of a track into ``divisions`` equal pieces (the remainder of
    ``frames - divisions * piece_size`` samples is never analysed)."""

    divisions: int
    piece_size: int

    @classmethod
    def for_frames(cls, frames_at_internal_rate: int) -> PieceLayout:
        divisions = int(frames_at_internal_rate / MAX_PIECE_FRAMES) + 1
        return cls(divisions, int(frames_at_internal_rate / divisions))

    def scaled(self, frames: int) -> PieceLayout:
        """The same pieces on a track of ``frames`` at another rate (same divisions)."""
        return PieceLayout(self.divisions, frames // self.divisions)

    @property
    def covered(self) -> int:
        return self.divisions * self.piece_size


def internal_frames(frames: int, rate: int) -> int:
    """Length of a track of ``frames`` at ``rate`` once resampled to 44.1 kHz."""
    if rate == INTERNAL_RATE:
        return frames
    up, down = _ratio(rate)
    return math.ceil(frames * up / down)


def _ratio(rate: int) -> tuple[int, int]:
    common = math.gcd(INTERNAL_RATE, rate)
    return INTERNAL_RATE // common, rate // common


class FirStream:
    """Streaming full convolution of a multichannel signal with per-channel FIRs.

    ``push`` takes the next input frames and returns the full-convolution outputs at
    the same positions (``y[n] = sum_k h[k] x[n - k]``); feed ``taps - 1`` zeros at the
    end to get the tail. Overlap-save with one FFT of the taps, batched float32 FFTs,
    and the last ``taps - 1`` inputs kept as history: the result equals one long
    ``scipy.signal.fftconvolve`` to float32 precision, in O(block) memory.
    """

    def __init__(self, taps: FloatArray, *, in_channels: int, fft_size: int | None = None) -> None:
        if taps.ndim != 2:
            raise ValueError("taps must be (length, channels)")
        self._length = int(taps.shape[0])
        size = fft_size or max(1 << 14, 1 << (4 * self._length - 1).bit_length())
        if size < 2 * self._length:
            raise ValueError("fft_size must be at least twice the FIR length")
        self._size = size
        self._hop = size - self._length + 1
        self._spectrum = fft.rfft(taps.astype(np.float32), n=size, axis=0)[None]
        self._history = np.zeros((self._length - 1, in_channels), dtype=np.float32)

    @property
    def length(self) -> int:
        return self._length

    def push(self, block: FloatArray) -> Float32Array:
        count = block.shape[0]
        data = np.concatenate([self._history, block.astype(np.float32, copy=False)])
        self._history = data[data.shape[0] - (self._length - 1) :].copy()
        frames = -(-count // self._hop)
        padded = np.zeros((frames * self._hop + self._length - 1, data.shape[1]), np.float32)
        padded[: data.shape[0]] = data
        stride_frames, stride_channels = padded.strides
        windows = np.lib.stride_tricks.as_strided(
            padded,
            shape=(frames, self._size, data.shape[1]),
            strides=(self._hop * stride_frames, stride_frames, stride_channels),
            writeable=False,
        )
        # Broadcasts one input channel over several FIRs (the true-peak phases).
        spectra = fft.rfft(windows, axis=1) * self._spectrum
        filtered = fft.irfft(spectra, n=self._size, axis=1)
        # Overlap-save: the first taps - 1 outputs of each window are wrapped around.
        valid = filtered[:, self._length - 1 :, :].reshape(frames * self._hop, -1)
        out: Float32Array = np.ascontiguousarray(valid[:count], dtype=np.float32)
        return out


def sliding_max(values: Float64Array, size: int) -> Float64Array:
    """max(values[j : j + size]) for every whole window j (``len - size + 1`` of them).

    numpy only (scipy.ndimage's import costs ~0.2 s a process): maxima over windows of
    1, 2, 4 ... samples by doubling (a few whole-array ``np.maximum`` passes), then a
    window of ``size`` is the max of two overlapping power-of-two windows. Exact.
    """
    count = values.shape[0] - size + 1
    if count <= 0:
        return np.zeros(0)
    current, width = values, 1
    while width * 2 <= size:
        # current[j] = max(values[j : j + width]) -> windows of twice the width
        current = np.maximum(current[:-width], current[width:])
        width *= 2
    result: Float64Array = np.maximum(current[:count], current[size - width : size - width + count])
    return result


def fade_edges_in_place(samples: Float32Array, rate: int, fade_s: float) -> None:
    """Raised-cosine fade in and out of (frames, channels) ``samples``, each ``fade_s``
    long (at most a quarter of the track)."""
    frames = int(samples.shape[0])
    length = min(round(fade_s * rate), frames // 4)
    if length <= 0:
        return
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length, dtype=np.float64))).astype(
        np.float32
    )
    samples[:length] *= ramp[:, None]
    samples[frames - length :] *= ramp[::-1, None]
