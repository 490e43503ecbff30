"""What the EQ convolution stage costs: ``convolve_stage`` on a target with a real
reference's matching EQs, as ``master`` runs it.

    PYTHONPATH=src .venv/bin/python -m bench.convolve_cost TARGET REFERENCE \
        [--rounds 5] [--save OUT.npz | --check OUT.npz] [--fresh-out]

Reads both WAVs as float32, builds the reference profile (``analyze``), the target's
levels and the mid/side FIRs as ``master`` does, then times ``convolve_stage`` over a
copy of the target, in place as the pipeline runs it (or into a fresh ``np.empty``
output with ``--fresh-out``, its page faults included), best of ``--rounds``.
``--save`` stores the output and the statistics; ``--check`` compares a run with
stored ones (another checkout's): the output to float32 rounding, the energies
relatively, the peaks and the stereo peak; and checks that the statistics describe
this run's output exactly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from mastering.engine import fft
from mastering.engine.analysis import analyze, analyze_levels
from mastering.engine.dsp import BLOCK_FRAMES
from mastering.engine.master import ConvolvedStats, convolve_stage, design_firs
from mastering.engine.params import MIN_VALUE
from mastering.track import Track


def _read(path: Path) -> Track:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return Track(np.ascontiguousarray(samples), int(rate))


def _compare(stored: Path, out: np.ndarray, stats: ConvolvedStats) -> None:
    old = np.load(stored)
    scale = float(np.max(np.abs(old["out"])))
    error = float(np.max(np.abs(out.astype(np.float64) - old["out"])))
    energy = float(np.max(np.abs(stats.energy / old["energy"] - 1.0)))
    print(f"out: max |difference| {error:.3g} ({20 * np.log10(max(error, 1e-30) / scale):.1f} dB)")
    print(f"energy: max relative difference {energy:.3g}")
    print(f"peak: max |difference| {float(np.max(np.abs(stats.peak - old['peak']))):.3g}")
    print(f"stereo peak: {stats.stereo_peak!r} vs {float(old['stereo_peak'])!r}")
    # The stats must describe this output exactly.
    mid = out[: stats.layout.covered, 0].reshape(stats.layout.divisions, -1)
    assert np.array_equal(stats.peak, np.max(np.abs(mid), axis=1).astype(np.float64))
    exact = np.einsum("ij,ij->i", mid.astype(np.float64), mid.astype(np.float64))
    assert np.allclose(stats.energy, exact, rtol=1e-9, atol=0.0)
    assert stats.stereo_peak == float(np.max(np.abs(out[:, 0]) + np.abs(out[:, 1])))
    print("stats match this output: peaks exactly, energies to 1e-9 relative")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh-out", action="store_true")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--save", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args()

    fft.load()
    target, reference = _read(args.target), _read(args.reference)
    profile = analyze(reference)
    rate = target.sample_rate
    levels = analyze_levels(target.samples, rate, role="target")
    gain = profile.match_rms / max(MIN_VALUE, levels.match_rms)
    mid_fir, side_fir = design_firs(profile, levels, gain, rate)

    seconds = []
    out = np.empty((target.frames, 2), dtype=np.float32)
    stats = None
    for _ in range(args.rounds):
        if args.fresh_out:
            out = np.empty((target.frames, 2), dtype=np.float32)
            source = target.samples
        else:
            out = target.samples.copy()
            source = out
        started = time.perf_counter()
        stats = convolve_stage(source, out, mid_fir, side_fir, levels.layout, BLOCK_FRAMES)
        seconds.append(time.perf_counter() - started)
    assert stats is not None
    print("convolve_stage s:", " ".join(f"{s:.3f}" for s in seconds), f"best {min(seconds):.3f}")
    if args.save:
        np.savez(
            args.save,
            out=out,
            energy=stats.energy,
            peak=stats.peak,
            stereo_peak=stats.stereo_peak,
        )
    if args.check:
        _compare(args.check, out, stats)


if __name__ == "__main__":
    main()
