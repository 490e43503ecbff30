"""One benchmark run in a fresh process: ``child.py KIND TARGET REFERENCE OUT``.

``engine`` runs the master function's pipeline (``mastering.pipeline.master_files``:
decode, validate, analyse the reference, master, write a 16-bit WAV, measure) with
the default options, i.e. the true-peak limiter aiming at the reference's loudness;
``engine-matchering`` runs the same pipeline with the ``matchering`` limiter (the
fidelity mode, whose output is ``matchering.process``'s); ``matchering`` runs
``matchering.process`` to a 16-bit WAV. The parent times the whole process and reads
its peak RSS; imports are part of what is measured.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mastering.options import MasteringOptions

KINDS = ("engine", "engine-matchering", "matchering")


def engine_options(kind: str) -> MasteringOptions:
    """The resolved options a job of this kind runs with, as the API would build them."""
    from mastering.options import Limiter, RequestedOptions, resolve_options

    limiter = Limiter.MATCHERING if kind == "engine-matchering" else None
    return resolve_options(RequestedOptions(limiter=limiter))


def run_engine(kind: str, target: Path, reference: Path, out: Path) -> None:
    from mastering.formats import OutputFormat
    from mastering.pipeline import MasteringRequest, master_files

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as work:
        request = MasteringRequest(
            target=target,
            reference=reference,
            outputs=(OutputFormat.WAV16,),
            work_dir=Path(work),
            min_duration_s=1.0,
            max_duration_s=4 * 3600.0,
            options=engine_options(kind),
        )
        outcome = master_files(request, lambda stage, percent: None)
        shutil.move(outcome.files[OutputFormat.WAV16], out)


def run_matchering(target: Path, reference: Path, out: Path) -> None:
    import matchering

    matchering.log(lambda text: None)
    matchering.process(str(target), str(reference), [matchering.pcm16(str(out))])


def main() -> None:
    kind, target, reference, out = sys.argv[1], *map(Path, sys.argv[2:5])
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "matchering":
        run_matchering(target, reference, out)
    else:
        run_engine(kind, target, reference, out)


if __name__ == "__main__":
    main()
