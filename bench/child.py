"""One benchmark run in a fresh process: ``child.py engine|matchering TARGET REFERENCE OUT``.

``engine`` runs the master function's pipeline (``mastering.pipeline.master_files``:
decode, validate, analyse the reference, master, write a 16-bit WAV, measure);
``matchering`` runs ``matchering.process`` to a 16-bit WAV. The parent times the
whole process and reads its peak RSS; imports are part of what is measured.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def run_engine(target: Path, reference: Path, out: Path) -> None:
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
        )
        outcome = master_files(request, lambda stage, percent: None)
        shutil.move(outcome.files[OutputFormat.WAV16], out)


def run_matchering(target: Path, reference: Path, out: Path) -> None:
    import matchering

    matchering.log(lambda text: None)
    matchering.process(str(target), str(reference), [matchering.pcm16(str(out))])


def main() -> None:
    kind, target, reference, out = sys.argv[1], *map(Path, sys.argv[2:5])
    if kind == "engine":
        run_engine(target, reference, out)
    elif kind == "matchering":
        run_matchering(target, reference, out)
    else:
        raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main()
