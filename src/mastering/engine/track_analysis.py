"""What a listener would measure of a track, in one streamed pass: the ``analysis``
of a job (DESIGN.md, "Previews and modes") for its target, reference and result.

* ``lufs``: integrated loudness, BS.1770-4 (``engine.loudness``, as pyloudnorm);
* ``loudness_range_lu``: EBU Tech 3342 (``engine.loudness_range``);
* ``true_peak_dbtp``: BS.1770-4 Annex 2 (``engine.true_peak``);
* ``sample_peak_dbfs``: the largest sample;
* ``bands_db``: level per one-third-octave band (``engine.spectrum_bands``), at the
  centres ``BAND_CENTRES_HZ``.

A value that cannot be measured (silence, a track too short for a loudness range, a
band above the Nyquist frequency) is None, JSON's null: never -inf or NaN, which
JSON cannot carry.

The meters share one pass: the K-weighting runs once for integrated loudness and
loudness range. ``TrackAnalyzer`` takes blocks as they come (e.g. while the result
is being written); ``analyze_blocks`` and ``analyze_track`` feed it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from mastering.engine.dsp import BLOCK_FRAMES, FloatArray
from mastering.engine.loudness import LoudnessMeter
from mastering.engine.loudness_range import LoudnessRangeMeter
from mastering.engine.spectrum_bands import BAND_CENTRES_HZ, BandMeter
from mastering.engine.true_peak import TruePeakMeter
from mastering.track import Track, sample_peak

__all__ = [
    "BAND_CENTRES_HZ",
    "TrackAnalysis",
    "TrackAnalyzer",
    "analysis_document",
    "analyze_blocks",
    "analyze_track",
]

PublicValue = float | None | list[float | None]
# Decimal places in the public document: 0.01 dB / LU is far finer than any meter's
# agreement with another (about 0.1).
_DIGITS = 2


@dataclass(frozen=True)
class TrackAnalysis:
    lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None
    # One per ``BAND_CENTRES_HZ``.
    bands_db: tuple[float | None, ...]

    def to_public(self) -> dict[str, PublicValue]:
        """DESIGN.md's shape: ``{lufs, loudness_range_lu, true_peak_dbtp,
        sample_peak_dbfs, bands_db}``, rounded to 0.01, None for what is unmeasurable."""
        return {
            "lufs": _public(self.lufs),
            "loudness_range_lu": _public(self.loudness_range_lu),
            "true_peak_dbtp": _public(self.true_peak_dbtp),
            "sample_peak_dbfs": _public(self.sample_peak_dbfs),
            "bands_db": [_public(level) for level in self.bands_db],
        }


def analysis_document(
    target: TrackAnalysis,
    *,
    reference: TrackAnalysis | None = None,
    result: TrackAnalysis | None = None,
) -> dict[str, object]:
    """A job's whole ``analysis``: ``{target, reference?, result?, band_centres_hz}``
    (a track not measured is left out)."""
    document: dict[str, object] = {"target": target.to_public()}
    if reference is not None:
        document["reference"] = reference.to_public()
    if result is not None:
        document["result"] = result.to_public()
    document["band_centres_hz"] = list(BAND_CENTRES_HZ)
    return document


def _public(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    # + 0.0: -0.0 (a level rounding to zero from below) reads as 0.0.
    return round(value, _DIGITS) + 0.0


def _db(amplitude: float) -> float | None:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else None


class TrackAnalyzer:
    """Every meter of ``TrackAnalysis`` over (frames, channels) blocks pushed in order.

    ``measure_true_peak=False`` leaves the true-peak meter out, for a caller that finds
    the same reading another way (the engine's result: ``master.result_true_peak``)
    and gives it to ``finish``.
    """

    def __init__(self, sample_rate: int, channels: int, *, measure_true_peak: bool = True) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError("a track needs a positive sample rate and at least one channel")
        self._channels = channels
        self._loudness = LoudnessMeter(sample_rate, channels=channels)
        self._range = LoudnessRangeMeter(sample_rate, channels=channels)
        self._true_peak_meter = TruePeakMeter(channels) if measure_true_peak else None
        self._bands = BandMeter(sample_rate, channels=channels)
        self._sample_peak = 0.0
        self._finite = True

    def push(self, block: FloatArray) -> None:
        if block.ndim != 2 or block.shape[1] != self._channels:
            raise ValueError(
                f"expected (frames, {self._channels}) samples, got shape {block.shape}"
            )
        if block.shape[0] == 0:
            return
        peak = sample_peak(block)
        # NaN compares false: max() would drop it, so it is remembered here.
        self._finite = self._finite and math.isfinite(peak)
        self._sample_peak = max(self._sample_peak, peak)
        self._range.push_squares(self._loudness.push(block))
        if self._true_peak_meter is not None:
            self._true_peak_meter.push(block)
        self._bands.push(block)

    def finish(self, *, true_peak: float | None = None) -> TrackAnalysis:
        """The measurements; the stream ends here. ``true_peak``: the linear true peak,
        when this analyzer was made without its meter (and only then)."""
        if self._true_peak_meter is not None:
            if true_peak is not None:
                raise ValueError("this analyzer measures the true peak itself")
            true_peak = self._true_peak_meter.finish()
        elif true_peak is None:
            raise ValueError("an analyzer without its true-peak meter needs the true peak")
        if not self._finite:
            # Samples that are not numbers measure as nothing (the pipeline refuses
            # such audio before it gets here).
            return TrackAnalysis(None, None, None, None, (None,) * len(BAND_CENTRES_HZ))
        return TrackAnalysis(
            lufs=self._loudness.integrated(),
            loudness_range_lu=self._range.loudness_range(),
            true_peak_dbtp=_db(true_peak),
            sample_peak_dbfs=_db(self._sample_peak),
            bands_db=tuple(self._bands.levels_db()),
        )


def analyze_blocks(
    blocks: Iterable[FloatArray], *, sample_rate: int, channels: int
) -> TrackAnalysis:
    """Analyse (frames, channels) blocks of one track, in order."""
    analyzer = TrackAnalyzer(sample_rate, channels)
    for block in blocks:
        analyzer.push(block)
    return analyzer.finish()


def analyze_track(track: Track, *, block_frames: int = BLOCK_FRAMES) -> TrackAnalysis:
    """Analyse a decoded track, ``block_frames`` at a time."""
    samples = track.samples
    return analyze_blocks(
        (samples[start : start + block_frames] for start in range(0, track.frames, block_frames)),
        sample_rate=track.sample_rate,
        channels=track.channels,
    )
