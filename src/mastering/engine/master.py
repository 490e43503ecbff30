"""The engine: analyse a reference once, master any number of targets against it.

``analyze`` (in ``analysis``) turns a reference into a ``ReferenceProfile``;
``master`` applies a profile to a target in named stages, each a pass over the track
in blocks:

1. ``analyze_levels``: the target's loudest pieces at 44.1 kHz (as the reference's);
2. ``design_firs``: mid and side matching EQs at the target's rate, ``intensity``
   of the way (in dB) from flat to the full match;
3. ``convolve_stage``: the EQs applied, output stored as mid/side float32, with
   per-piece energy and peak of the result's mid.

Then one of two endings, as ``MasterOptions.limiter`` says:

* ``true_peak`` (the default): ``limiter_stats`` measures the EQ'd track (loudness,
  K-weighted power and a bound of the true peak per control group),
  ``exact_peaks_from`` measures the true peak exactly where the limiter may act on it
  (most of the track's 8x interpolation is spared), ``plan_for_loudness`` finds the
  make-up gain that lands the loudness asked for under the true-peak ceiling, and
  ``true_peak_stage`` applies gain and limiter, mid/side back to left/right in place,
  and analyses the result in the same pass (``engine.true_peak_limiter``,
  ``engine.track_analysis``);
* ``matchering``: ``correct_levels``, matchering's four RMS corrections, from the
  convolution's statistics (re-reading only pieces that would clip), then
  ``limit_stage``, its sample-peak limiter and final gain, the result analysed as it
  is written: ``matchering.process``'s own output.

The target's own loudness is not measured here: the caller's analysis of the target
(``engine.track_analysis``) has it.

The output is float32 stereo at the target's own rate. With ``in_place`` it is
written over a stereo target's samples, so the track is held only once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mastering.engine.analysis import LevelAnalysis, analyze_levels, loudest_pieces
from mastering.engine.dsp import (
    BLOCK_FRAMES,
    FirStream,
    Float32Array,
    Float64Array,
    FloatArray,
    PieceLayout,
    fade_edges_in_place,
    sum_and_difference,
)
from mastering.engine.eq import design_fir, matching_ratio
from mastering.engine.limiter import design_limiter, gain_envelope, hard_clip_gain, limiter_needed
from mastering.engine.loudness import MID_SIDE_GAINS, LoudnessMeter
from mastering.engine.params import MIN_VALUE, RMS_CORRECTION_STEPS
from mastering.engine.profile import ReferenceProfile
from mastering.engine.track_analysis import TrackAnalysis, TrackAnalyzer
from mastering.engine.true_peak import (
    METER_TOLERANCE_DB,
    REACH,
    ROW,
    TruePeakBounds,
    group_peaks_of_windows,
    peaks_at_rows,
    reach_gain,
    windows_at_rows,
)
from mastering.engine.true_peak_limiter import (
    SAFETY_MARGIN_DB,
    LimiterPlan,
    SignalStats,
    apply_block,
    control_group,
    gain_threshold_db,
    limiting_threshold_db,
    plan_for_loudness,
    to_db_array,
)
from mastering.options import DEFAULT_TRUE_PEAK_DBTP, Limiter
from mastering.track import Track

ProgressFn = Callable[[float], None]

# Fade in and out of the true-peak path's master: long enough that its first and last
# samples are near silence, short enough not to blunt a downbeat at the start.
EDGE_FADE_S = 0.003


@dataclass(frozen=True)
class MasterOptions:
    block_frames: int = BLOCK_FRAMES
    # Overwrite a stereo target's samples with the master (no second copy of the track).
    in_place: bool = False
    # Share of the matching EQ applied, in dB: 0 keeps the target's own balance.
    intensity: float = 1.0
    limiter: Limiter = Limiter.TRUE_PEAK
    # The true-peak limiter's goals. None: the loudness matchering's RMS matching gives.
    loudness_lufs: float | None = None
    ceiling_dbtp: float = DEFAULT_TRUE_PEAK_DBTP


@dataclass(frozen=True)
class MasterResult:
    samples: Float32Array  # (frames, 2) at sample_rate, the target's rate
    sample_rate: int
    # What a listener would measure of ``samples``: loudness, true peak, bands...
    analysis: TrackAnalysis
    limited: bool
    # The loudness aimed at (true-peak limiter), and whether it was reached or given
    # up because the limiter would have had to squash the track.
    loudness_target_lufs: float | None = None
    loudness_reached: bool = True
    limiter_reduction_db: float = 0.0

    @property
    def result_lufs(self) -> float | None:
        return self.analysis.lufs

    @property
    def true_peak(self) -> float:
        """Linear true peak of ``samples`` (``engine.true_peak``), 0 for silence."""
        peak_db = self.analysis.true_peak_dbtp
        return 0.0 if peak_db is None else 10.0 ** (peak_db / 20.0)


@dataclass(frozen=True)
class ConvolvedStats:
    """What the level corrections need of the EQ'd mid, per piece at the target rate."""

    layout: PieceLayout
    energy: Float64Array  # sum of squares of the EQ'd mid in each piece
    peak: Float64Array  # its largest absolute value in each piece
    stereo_peak: float  # max |mid| + |side|: the largest |left| or |right|


def _no_progress(_: float) -> None:
    return None


def master(
    target: Track,
    profile: ReferenceProfile,
    options: MasterOptions | None = None,
    *,
    on_progress: ProgressFn | None = None,
) -> MasterResult:
    """Master ``target`` to sound like the reference ``profile`` describes."""
    options = options or MasterOptions()
    progress = on_progress or _no_progress
    rate, frames = target.sample_rate, target.frames
    levels = analyze_levels(target.samples, rate, role="target")
    progress(0.15)
    gain = profile.match_rms / max(MIN_VALUE, levels.match_rms)
    mid_fir, side_fir = design_firs(profile, levels, gain, rate, intensity=options.intensity)
    progress(0.2)
    if options.in_place and target.channels == 2:
        out = target.samples
    else:
        out = np.empty((frames, 2), dtype=np.float32)
    stats = convolve_stage(
        target.samples, out, mid_fir, side_fir, levels.layout, options.block_frames
    )
    progress(0.55)
    if options.limiter is Limiter.MATCHERING:
        gain = correct_levels(out[:, 0], stats, gain, profile.match_rms, options.block_frames)
        progress(0.7)
        analyzer = TrackAnalyzer(rate, 2)
        limited = limit_stage(
            out,
            gain,
            profile.amplitude_coefficient,
            rate,
            stats.stereo_peak,
            analyzer,
            options.block_frames,
        )
        progress(1.0)
        return MasterResult(
            samples=out, sample_rate=rate, analysis=analyzer.finish(), limited=limited
        )
    # A master that starts or ends mid-waveform clicks where playback starts or stops,
    # and meters that pad the edges by mirroring (ffmpeg's resampler, hence its
    # ebur128 true peak) read a spurious peak there, up to half a dB over: the first
    # and last few milliseconds are faded, as a mastering engineer would.
    fade_edges_in_place(out, rate, EDGE_FADE_S)
    signal = limiter_stats(out, rate, options.block_frames)
    progress(0.65)
    loudness = options.loudness_lufs
    if loudness is None and signal.loudness is not None:
        # matchering's level: the gain that matches the loudest pieces' RMS.
        loudness = signal.loudness + 20.0 * math.log10(max(gain, MIN_VALUE))
    target_lufs = loudness if loudness is not None else -math.inf
    signal, plan = plan_on_exact_peaks(signal, out, target_lufs, options.ceiling_dbtp)
    progress(0.7)
    analysis = true_peak_stage(out, plan, signal, options.ceiling_dbtp, rate, options.block_frames)
    progress(1.0)
    return MasterResult(
        samples=out,
        sample_rate=rate,
        analysis=analysis,
        limited=plan.max_reduction_db > 0.0,
        loudness_target_lufs=loudness,
        loudness_reached=plan.reached,
        limiter_reduction_db=plan.max_reduction_db,
    )


def design_firs(
    profile: ReferenceProfile,
    levels: LevelAnalysis,
    gain: float,
    rate: int,
    *,
    intensity: float = 1.0,
) -> tuple[Float64Array, Float64Array]:
    """Mid and side matching FIRs; the target's spectra count at its matched level."""
    mid = matching_ratio(np.asarray(profile.mid_spectrum), levels.mid_spectrum * gain)
    side = matching_ratio(np.asarray(profile.side_spectrum), levels.side_spectrum * gain)
    return (
        design_fir(mid, rate, intensity=intensity),
        design_fir(side, rate, intensity=intensity),
    )


def convolve_stage(
    source: FloatArray,
    out: Float32Array,
    mid_fir: Float64Array,
    side_fir: Float64Array,
    layout: PieceLayout,
    block: int,
) -> ConvolvedStats:
    """EQ the target's mid and side (``fftconvolve(..., "same")``) into ``out``.

    Outputs trail inputs by half the FIR, so writing them over the source (in place)
    only ever overwrites frames already read. The mid/side block is written straight
    into the stream's input and the statistics read its channel-major output, in
    buffers reused from block to block (fresh ones page-fault).
    """
    frames = source.shape[0]
    # The FIRs take the halving of (L + R) / 2 and (L - R) / 2: one pass less over the
    # block, and the same outputs to the bit (halving is exact in float32 and float64
    # short of subnormals, and FFTs and products commute with it).
    halved = np.stack([mid_fir, side_fir], axis=1) * 0.5
    stream = FirStream(halved, in_channels=2, block=block)
    offset = (stream.length - 1) // 2
    energy = np.zeros(layout.divisions)
    peak = np.zeros(layout.divisions)
    stereo_peak = 0.0
    magnitudes = np.empty((2, min(block, frames) + offset), dtype=np.float32)

    def store(full: Float32Array, first: int) -> None:
        nonlocal stereo_peak
        lo, hi = max(first - offset, 0), min(first - offset + full.shape[1], frames)
        if hi <= lo:
            return
        mid, side = full[:, lo - (first - offset) : hi - (first - offset)]
        # Column by column: a (frames, 2) store from (2, frames) is several times slower.
        out[lo:hi, 0] = mid
        out[lo:hi, 1] = side
        mid_magnitude = np.abs(mid, out=magnitudes[0, : hi - lo])
        side_magnitude = np.abs(side, out=magnitudes[1, : hi - lo])
        _accumulate_pieces(mid, mid_magnitude, lo, layout, energy, peak)
        mid_magnitude += side_magnitude
        stereo_peak = max(stereo_peak, float(mid_magnitude.max()))

    for start in range(0, frames, block):
        chunk = source[start : start + block]
        sum_and_difference(chunk, stream.inputs(chunk.shape[0]).T)
        store(stream.push_inputs(), start)
    # The last half-FIR of outputs needs inputs past the end: zeros, as fftconvolve.
    stream.inputs(offset)[...] = 0.0
    store(stream.push_inputs(), frames)
    return ConvolvedStats(layout, energy, peak, stereo_peak)


def _accumulate_pieces(
    values: Float32Array,
    magnitudes: Float32Array,
    first: int,
    layout: PieceLayout,
    energy: Float64Array,
    peak: Float64Array,
) -> None:
    """Add ``values`` (from frame ``first`` on) and their ``magnitudes`` to each
    piece's energy and peak. The sums of squares are float64 products summed by
    einsum, not ``@``: OpenBLAS's threads would spin against the FFTs' workers (that
    cost this stage more than its FFTs)."""
    size = layout.piece_size
    stop = min(first + values.shape[0], layout.covered)
    position = first
    while position < stop:
        index = position // size
        end = min((index + 1) * size, stop)
        part = values[position - first : end - first]
        energy[index] += np.einsum("i,i->", part, part, dtype=np.float64)
        peak[index] = max(peak[index], float(magnitudes[position - first : end - first].max()))
        position = end


def correct_levels(
    mid: Float32Array, stats: ConvolvedStats, gain: float, reference_rms: float, block: int
) -> float:
    """matchering's RMS correction steps: bring the loudest pieces of the clipped
    result's mid to the reference's RMS. Returns the total gain on the EQ'd signal."""
    size = stats.layout.piece_size
    for _ in range(RMS_CORRECTION_STEPS):
        energy = gain * gain * stats.energy
        # Only pieces that would clip at this gain need their samples again.
        for index in np.flatnonzero(gain * stats.peak > 1.0):
            energy[index] = _clipped_energy(mid[index * size : (index + 1) * size], gain, block)
        _, match_rms = loudest_pieces(np.sqrt(energy / size))
        gain *= reference_rms / max(MIN_VALUE, match_rms)
    return gain


def _clipped_energy(values: Float32Array, gain: float, block: int) -> float:
    total = 0.0
    for start in range(0, values.shape[0], block):
        scaled = values[start : start + block].astype(np.float64) * gain
        np.clip(scaled, -1.0, 1.0, out=scaled)
        total += float(scaled @ scaled)
    return total


def limit_stage(
    out: Float32Array,
    gain: float,
    coefficient: float,
    rate: int,
    stereo_peak: float,
    analyzer: TrackAnalyzer,
    block: int,
) -> bool:
    """Mid/side in ``out`` → limited, scaled left/right in place, pushed to ``analyzer``
    as written. True if it limited."""
    frames = out.shape[0]

    def left_right(start: int, stop: int) -> tuple[Float64Array, Float64Array]:
        mid = out[start:stop, 0].astype(np.float64)
        side = out[start:stop, 1].astype(np.float64)
        return (mid + side) * gain, (mid - side) * gain

    def hard_clip(start: int, stop: int) -> Float64Array:
        left, right = left_right(start, stop)
        return hard_clip_gain(np.maximum(np.abs(left), np.abs(right)))

    def write(start: int, stop: int, envelope: Float64Array | None) -> None:
        left, right = left_right(start, stop)
        if envelope is not None:
            left *= envelope
            right *= envelope
        out[start:stop, 0] = left * coefficient
        out[start:stop, 1] = right * coefficient
        analyzer.push(out[start:stop])

    if not limiter_needed(gain * stereo_peak):
        for start in range(0, frames, block):
            write(start, min(start + block, frames), None)
        return False
    for start, stop, envelope in gain_envelope(hard_clip, frames, design_limiter(rate), block):
        write(start, stop, envelope)
    return True


def limiter_stats(out: Float32Array, rate: int, block: int) -> SignalStats:
    """What the true-peak limiter needs of the EQ'd mid/side in ``out``, in one pass:
    its loudness, and per control group its K-weighted power and an upper bound of the
    true peak of the left/right pair it makes (``exact_peaks_from`` then measures the
    peaks that matter)."""
    frames = out.shape[0]
    group = control_group(rate)
    block -= block % group
    groups = -(-frames // group)
    meter = LoudnessMeter(rate, channels=2, frames=frames, gains=MID_SIDE_GAINS)
    weights = meter.gains.astype(np.float32)
    powers = np.zeros(groups, dtype=np.float32)
    bounds = TruePeakBounds(2, group=group)
    for start in range(0, frames, block):
        part = out[start : start + block]
        weighted = meter.push(part) @ weights
        padded = np.zeros(-(-weighted.shape[0] // group) * group, dtype=np.float32)
        padded[: weighted.shape[0]] = weighted
        sums = padded.reshape(-1, group).sum(axis=1, dtype=np.float64)
        powers[start // group : start // group + sums.shape[0]] = sums
        bounds.push(_left_right(part))
    return SignalStats(
        rate=rate,
        frames=frames,
        group=group,
        peaks_db=to_db_array(bounds.finish()),
        powers=powers,
        loudness=meter.integrated(),
    )


def _left_right(mid_side: Float32Array) -> Float32Array:
    """The (unscaled) left/right pair of (..., 2) mid/side: mid + side, mid - side."""
    return sum_and_difference(mid_side, np.empty(mid_side.shape, dtype=np.float32))


def exact_peaks_from(stats: SignalStats, out: Float32Array, threshold_db: float) -> SignalStats:
    """``stats`` with the exact true peak (``TruePeakStream``'s) of every group whose
    bound reaches ``threshold_db``, read from the EQ'd mid/side in ``out``; the other
    groups keep their bounds, which the limiter does not act on at the gains the
    threshold allows (``gain_threshold_db``, ``limiting_threshold_db``)."""
    per_row = ROW // stats.group
    bounds = stats.peaks_db
    padded = np.full(-(-bounds.shape[0] // per_row) * per_row, -np.inf, dtype=np.float32)
    padded[: bounds.shape[0]] = bounds
    rows = np.flatnonzero(padded.reshape(-1, per_row).max(axis=1) >= threshold_db)
    if rows.shape[0] == 0:
        return stats
    peaks = padded.copy()
    # A few thousand rows at a time: their windows are copies (mid/side, then the pair).
    for first in range(0, rows.shape[0], _EXACT_ROWS_AT_ONCE):
        chosen = rows[first : first + _EXACT_ROWS_AT_ONCE]
        windows = _left_right(windows_at_rows(out, chosen))
        exact = group_peaks_of_windows(windows, group=stats.group)
        at = (chosen[:, None] * per_row + np.arange(per_row)[None, :]).reshape(-1)
        peaks[at] = to_db_array(exact.reshape(-1))
    return dataclasses.replace(stats, peaks_db=peaks[: bounds.shape[0]])


def plan_on_exact_peaks(
    stats: SignalStats, out: Float32Array, target_lufs: float, ceiling_dbtp: float
) -> tuple[SignalStats, LimiterPlan]:
    """The limiter's plan (``plan_for_loudness``) with every peak it acts on measured
    exactly (``exact_peaks_from``), and the stats with those peaks.

    The gain that lands the loudness is rarely far above the gain alone: the peaks that
    matter up to ``_LIKELY_EXTRA_GAIN_DB`` above it are measured first (on music a
    few percent of the rows), and the plan made. Its gain is the root of the
    predicted loudness, which is exact wherever it lies within what was measured (a
    group measured only as a bound is not limited there), so only a plan with more
    gain than that, or one that gives the loudness up, needs the rest of the peaks the
    search may reach, and is made again.
    """
    if stats.loudness is None or not math.isfinite(target_lufs):
        stats = exact_peaks_from(stats, out, gain_threshold_db(ceiling_dbtp, 0.0))
        return stats, plan_for_loudness(stats, target_lufs, ceiling_dbtp)
    covered = target_lufs - stats.loudness + _LIKELY_EXTRA_GAIN_DB
    stats = exact_peaks_from(stats, out, gain_threshold_db(ceiling_dbtp, covered))
    plan = plan_for_loudness(stats, target_lufs, ceiling_dbtp)
    # Beyond what was measured, or given up (a bound may have made too much limiting
    # look necessary there): the search again on every peak it may reach.
    if plan.gain_db > covered or not plan.reached:
        threshold = limiting_threshold_db(stats, target_lufs, ceiling_dbtp)
        stats = exact_peaks_from(stats, out, threshold)
        plan = plan_for_loudness(stats, target_lufs, ceiling_dbtp)
    return stats, plan


# How far above the gain alone ``plan_on_exact_peaks`` measures first: the limiter
# rarely takes more than this much loudness away from a master that reaches its target.
_LIKELY_EXTRA_GAIN_DB = 1.5
# Rows measured at a time in ``exact_peaks_from``: ~4 MB of windows.
_EXACT_ROWS_AT_ONCE = 4096


def result_true_peak(out: Float32Array, plan: LimiterPlan, stats: SignalStats) -> float:
    """The true peak of the limited left/right master in ``out``: ``TruePeakMeter``'s
    reading, from the few rows that can hold it.

    What the limiter knew bounds each row of 64 samples: the EQ'd pair's peak per
    group (``stats``: exact where the limiter may act, an upper bound elsewhere) times
    the largest gain over the samples the row's interpolation draws on, plus what the
    gain's swing over them can add (the filter's |h| sum times the swing times the
    pair's largest sample there, itself under its peak), raised by
    ``_RESULT_REFINEMENT`` for the refinement between 8x points. Rows are measured
    exactly from the highest bound down, until no bound left can beat the largest
    peak found: on a limited master the rows at the ceiling and little else.
    """
    rows = -(-out.shape[0] // ROW)
    # One float32 per row (1/64 of the track's samples), computed a span at a time so
    # the intermediate arrays stay small however long the track.
    bounds = np.concatenate(
        [
            _row_bounds(plan, stats, first, min(first + _BOUND_ROWS_AT_ONCE, rows))
            for first in range(0, rows, _BOUND_ROWS_AT_ONCE)
        ]
    )
    # The rows with the highest bounds first...
    top = min(_RESULT_ROWS_AT_ONCE, rows)
    leaders = np.argpartition(-bounds, top - 1)[:top]
    best = float(peaks_at_rows(out, leaders).max())
    # ...then every other row whose bound beats the largest peak found, highest first.
    bounds[leaders] = -np.inf
    chosen = np.flatnonzero(bounds >= best)
    chosen = chosen[np.argsort(-bounds[chosen], kind="stable")]
    for at in range(0, chosen.shape[0], _RESULT_ROWS_AT_ONCE):
        batch = chosen[at : at + _RESULT_ROWS_AT_ONCE]
        batch = batch[bounds[batch] >= best]
        if batch.shape[0]:
            best = max(best, float(peaks_at_rows(out, batch).max()))
    return best


def _row_bounds(plan: LimiterPlan, stats: SignalStats, first: int, stop: int) -> Float32Array:
    """``result_true_peak``'s bound of the peak of each row ``first .. stop - 1``."""
    per_row = ROW // plan.group
    # Peaks per row, from one row before to one after (zero past the track's ends).
    padded = np.zeros((stop - first + 2) * per_row, dtype=np.float32)
    lead = per_row if first > 0 else 0
    source = stats.peaks_db[max(first - 1, 0) * per_row : (stop + 1) * per_row]
    padded[per_row - lead : per_row - lead + source.shape[0]] = 10.0 ** (source / 20.0)
    per_row_peaks = padded.reshape(-1, per_row).max(axis=1)
    own = per_row_peaks[1:-1]
    # Samples a row draws on lie in it and its neighbours (REACH < ROW).
    nearby = np.maximum(np.maximum(per_row_peaks[:-2], own), per_row_peaks[2:])
    # The gain over frames [r ROW - REACH, (r + 1) ROW + REACH): linear between the
    # knots of the groups those frames fall in.
    knots = plan.knots * np.float32(10.0 ** (plan.gain_db / 20.0))
    index = np.arange(first, stop)
    lowest_group = (index * ROW - REACH) // plan.group
    span = ((first + 1) * ROW + REACH - 1) // plan.group + 1 - (first * ROW - REACH) // plan.group
    # One knot array per offset into the span (the same for every row): whole-array
    # maxima instead of a short reduction per row.
    shifted = [
        knots[np.clip(lowest_group + offset, 0, knots.shape[0] - 1)] for offset in range(span + 1)
    ]
    highest = np.maximum.reduce(shifted)
    swing = highest - np.minimum.reduce(shifted)
    bounds: Float32Array = (highest * own + np.float32(reach_gain()) * swing * nearby) * np.float32(
        _RESULT_REFINEMENT
    )
    return bounds


# How far a refined peak may sit above the 8x points it is fitted to, for a band-limited
# signal: 1 / cos(pi B / 8 fs) is 0.19 dB at B = 0.54 fs (the interpolation filter's
# transition band); a slowly moving gain widens the band by a few hundred Hz.
_RESULT_REFINEMENT = 10.0 ** (0.3 / 20.0)
# Rows measured exactly per batch in ``result_true_peak``, and rows bounded at a time.
_RESULT_ROWS_AT_ONCE = 512
_BOUND_ROWS_AT_ONCE = 1 << 16


def true_peak_stage(
    out: Float32Array,
    plan: LimiterPlan,
    stats: SignalStats,
    ceiling_dbtp: float,
    rate: int,
    block: int,
) -> TrackAnalysis:
    """Mid/side in ``out`` -> left/right with make-up gain and limiter, in place, analysed
    in the same pass (its true peak by ``result_true_peak``, from the rows that can
    hold it). Should the measured true peak still be over the ceiling (the limiter
    works on a prediction of it), the whole master is turned down by the difference
    and analysed again: the ceiling is a promise, the last hundredth of a dB of
    loudness is not."""
    frames = out.shape[0]
    block -= block % plan.group
    analyzer = TrackAnalyzer(rate, 2, measure_true_peak=False)
    # The left/right pair of each block, channel by channel, in one reused buffer.
    pair = np.empty((2, min(block, frames)), dtype=np.float32)
    for start in range(0, frames, block):
        part = out[start : start + block]
        left, right = sum_and_difference(part, pair[:, : part.shape[0]].T).T
        apply_block(left, right, start, plan, part)
        analyzer.push(part)
    analysis = analyzer.finish(true_peak=result_true_peak(out, plan, stats))
    peak_db = analysis.true_peak_dbtp
    if peak_db is not None and peak_db > ceiling_dbtp - METER_TOLERANCE_DB:
        scale = np.float32(10.0 ** ((ceiling_dbtp - SAFETY_MARGIN_DB - peak_db) / 20.0))
        analyzer = TrackAnalyzer(rate, 2)
        for start in range(0, frames, block):
            part = out[start : start + block]
            part *= scale
            analyzer.push(part)
        analysis = analyzer.finish()
    return analysis
