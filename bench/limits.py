"""What one job costs per track length: the numbers behind the master function's limits.

``make bench-limits`` (or ``python bench/limits.py --lengths 3,10,30,60``) runs the
master function's whole pipeline (``mastering.pipeline.master_files``: decode,
validate, analyse the reference, master, write every output format, measure) on
synthetic 16-bit 44.1 kHz stereo WAV pairs, each in a fresh process as the master
function's forked worker is, and prints per length:

* wall time here, and the median over ``--rounds``;
* peak RSS of the worker, plus the resident size of the handler process it is forked
  from (``import app`` + ``preload_engine``), which Lambda counts against the same
  memory limit;
* peak bytes in the work directory (the function's ``/tmp``: both inputs, the
  decoded temporaries and every output);
* GB-seconds billed at a given ``MasterMemorySize``, and the limits derived for the
  longest length: memory = (peak RSS + handler) x 1.25 rounded up to 64 MB, but at
  least what buys one vCPU per core used here, up to 3008 MB (a job's GB-s barely
  change while the engine can use the extra vCPU; the worker's RSS includes the
  libraries it shares with the handler, so the sum over-counts them), and the
  time on Lambda scaled by the vCPU share that memory buys (1 vCPU per 1769 MB,
  against the cores used here), with a x3 margin for slower cores and the S3
  transfers, which must fit in the 900 s Lambda allows.

Worst case on purpose: WAV inputs (the largest uploads and /tmp files per minute) and
all four output formats. Run it on an otherwise idle machine; the numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HANDLER_DIR = REPO / "functions" / "master"
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_TIMEOUT_S = 900
NEW_ACCOUNT_MAX_MB = 3008
MEMORY_MARGIN = 1.25
TIME_MARGIN = 3.0
# $ per GB-second for x86_64 Lambda in us-east-1 (first pricing tier), for the table.
USD_PER_GB_S = 0.0000166667


@dataclass(frozen=True)
class Measurement:
    minutes: float
    wall_s: float
    worker_rss_mb: float
    disk_peak_mb: float
    # User + system CPU seconds of the worker and the encoders it waited for: on a
    # shared machine, a wall time far above this means the job waited for the cores.
    cpu_s: float


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            # A temporary may vanish between the listing and the stat.
            with contextlib.suppress(FileNotFoundError):
                total += (Path(folder) / name).stat().st_size
    return total


def child(target: Path, reference: Path, work: Path) -> None:
    """One job, as the forked worker runs it; prints the peak /tmp bytes it saw."""
    from mastering.formats import OutputFormat
    from mastering.pipeline import MasteringRequest, master_files

    # Inputs sit in the work directory in Lambda too (downloaded from S3).
    inputs = _tree_bytes(work)
    peak = [inputs]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_bytes(work))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    request = MasteringRequest(
        target=target,
        reference=reference,
        outputs=tuple(OutputFormat),
        work_dir=work,
        min_duration_s=1.0,
        max_duration_s=4 * 3600.0,
    )
    master_files(request, lambda stage, percent: None)
    done.set()
    watcher.join()
    peak[0] = max(peak[0], _tree_bytes(work))
    print(f"disk_peak_bytes={peak[0]}")


def handler_rss_mb() -> float:
    """Resident size of the handler process after import and preload (what is forked)."""
    code = (
        "import resource, app; from mastering.pipeline import preload_engine; "
        "preload_engine(); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    # Prepended, not replacing: a PYTHONPATH naming this checkout's src/ must still win
    # over the package installed in the venv.
    paths = [str(HANDLER_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=HANDLER_DIR, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"handler import failed:\n{out.stderr}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def run_once(minutes: float, target: Path, reference: Path) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="limits-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        # Copies, as the worker's downloads would be, so /tmp holds what it holds in Lambda.
        local_target, local_reference = work / "input-target", work / "input-reference"
        local_target.write_bytes(target.read_bytes())
        local_reference.write_bytes(reference.read_bytes())
        report = Path(tmp + ".out")
        started = time.perf_counter()
        with report.open("w") as sink:
            process = subprocess.Popen(
                [sys.executable, __file__, "--child", str(local_target), str(local_reference)],
                stdout=sink,
            )
            # wait4, not wait: it gives this child's own peak RSS.
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        output = report.read_text()
        report.unlink()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the job on {minutes:g} min failed")
        disk = next(
            int(line.split("=", 1)[1])
            for line in output.splitlines()
            if line.startswith("disk_peak_bytes=")
        )
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement(minutes, wall, usage.ru_maxrss / 1024.0, disk / 1e6, cpu)


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="3,10,30,60", help="minutes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="runs per length (median)")
    parser.add_argument("--memory-mb", type=int, default=None, help="price GB-s at this size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/spectrum-bench"))
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, reference = args.child
        child(target, reference, target.parent)
        return

    # The bench's own pairs (same files, cached in the same folder): imported here, not
    # at the top, so a --child run loads nothing it would not load in Lambda.
    sys.path.insert(0, str(REPO))
    from bench.run import REFERENCE_RATE, ensure_pair

    args.work.mkdir(parents=True, exist_ok=True)
    lengths = [float(value) for value in args.lengths.split(",")]
    handler_mb = handler_rss_mb()
    cores = os.cpu_count() or 1
    results: list[Measurement] = []
    for minutes in lengths:
        target, reference = ensure_pair(args.work, minutes, REFERENCE_RATE)
        runs = [run_once(minutes, target, reference) for _ in range(args.rounds)]
        results.append(
            Measurement(
                minutes,
                statistics.median(run.wall_s for run in runs),
                max(run.worker_rss_mb for run in runs),
                max(run.disk_peak_mb for run in runs),
                statistics.median(run.cpu_s for run in runs),
            )
        )
        last = results[-1]
        print(
            f"  {minutes:g} min: {last.wall_s:.1f} s ({last.cpu_s:.1f} s CPU), "
            f"worker {last.worker_rss_mb:.0f} MB, "
            f"/tmp {last.disk_peak_mb:.0f} MB",
            flush=True,
        )

    longest = results[-1]
    # GB-s per job stay about the same while more memory buys vCPUs the engine uses
    # (time falls as memory grows), so memory buys as many vCPUs as cores here, up to
    # the 3008 MB new accounts are limited to; more only if the peak needs it.
    memory_mb = args.memory_mb or max(
        _round_up((longest.worker_rss_mb + handler_mb) * MEMORY_MARGIN, 64),
        min(cores * LAMBDA_MB_PER_VCPU, NEW_ACCOUNT_MAX_MB),
    )
    vcpus = min(memory_mb / LAMBDA_MB_PER_VCPU, float(cores))
    slowdown = cores / vcpus

    print(f"\n## One job per length ({cores} cores here; WAV in, all four formats out)\n")
    print(f"Handler process before the fork: {handler_mb:.0f} MB.")
    print(f"GB-s and cost at MasterMemorySize={memory_mb} MB, time scaled x{slowdown:.2f}.\n")
    print(
        "| length | time here | peak RSS (worker + handler) | peak /tmp | est. Lambda time |"
        " GB-s | cost (x86_64) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results:
        lambda_s = row.wall_s * slowdown
        gb_s = memory_mb / 1024.0 * lambda_s
        print(
            f"| {row.minutes:g} min | {row.wall_s:.1f} s | "
            f"{row.worker_rss_mb + handler_mb:.0f} MB | {row.disk_peak_mb:.0f} MB | "
            f"{lambda_s:.0f} s | {gb_s:.0f} | ${gb_s * USD_PER_GB_S:.4f} |"
        )
    timeout_s = _round_up(longest.wall_s * slowdown * TIME_MARGIN, 60)
    print(f"\n## Limits derived from the {longest.minutes:g}-minute job\n")
    print(
        f"MasterMemorySize  {memory_mb} MB  (at least peak x {MEMORY_MARGIN} in 64 MB steps; "
        f"a vCPU per core used here, up to {NEW_ACCOUNT_MAX_MB} MB)"
    )
    print(
        f"MasterTimeout     {min(timeout_s, LAMBDA_MAX_TIMEOUT_S)} s  "
        f"(est. Lambda time x {TIME_MARGIN}, whole minutes"
        + (f"; NEEDS {timeout_s} s, over Lambda's 900" if timeout_s > LAMBDA_MAX_TIMEOUT_S else "")
        + ")"
    )
    print(f"MaxDurationSeconds {int(longest.minutes * 60)}  (the longest length measured)")
    print(f"EphemeralStorage  >= {_round_up(longest.disk_peak_mb * MEMORY_MARGIN, 512)} MB")


if __name__ == "__main__":
    main()
