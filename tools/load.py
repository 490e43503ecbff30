#!/usr/bin/env python3
"""`make load`: the local stack under load (a benchmark, not a test).

Starts `mastering serve` on free loopback ports (its own process group, as a user
would run it), then:

1. **Job creations**: ``--creations`` `POST /jobs` at ``--concurrency`` (each by one of
   ``--owners`` owners, so the per-owner limit is not what is measured), each followed
   by a `GET /jobs/{id}`;
2. **Masterings**: ``--jobs`` jobs with a short synthesised target and a preset,
   uploaded with their presigned POSTs, mastered by the stack's ``--workers`` workers;
   waits until every one has ended.

Prints the errors (anything but the expected answer; the goal is 0), p50/p99 of
`POST /jobs` and `GET /jobs/{id}`, the masterings' throughput, and the memory (RSS) of
the stack's whole process tree before and after. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

API_KEY = "load-test-key"
READY_S = 90.0
MASTERING_DEADLINE_S = 900.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every descendant, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid, parent = int(entry.name), int(fields[1])
            children.setdefault(parent, []).append(pid)
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / 1e6


@contextlib.contextmanager
def _serve(workers: int, work: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    api_port, s3_port = _free_port(), _free_port()
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mastering.cli",
            "serve",
            "--api-port",
            str(api_port),
            "--s3-port",
            str(s3_port),
            "--api-key",
            API_KEY,
            "--workers",
            str(workers),
            "--work-dir",
            str(work / "tmp"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if process.poll() is not None:
                raise SystemExit(f"serve exited with {process.returncode}; see {log.name}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("serve did not answer /health in time")
            time.sleep(0.2)
        yield api, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


@dataclass
class Tally:
    post_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _song(seconds: float, rate: int = 44_100) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3300 * t)
    pcm = (np.stack([tone, tone * 0.9], axis=1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sink:
        sink.setnchannels(2)
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _create(
    session: requests.Session, api: str, owner: str, size: int, tally: Tally
) -> dict[str, object] | None:
    body = {
        "target": {"filename": "load.wav", "size": size, "content_type": "audio/wav"},
        "preset": "balanced",
    }
    started = time.perf_counter()
    try:
        response = session.post(f"{api}/jobs", json=body, headers={"X-Owner-Id": owner}, timeout=30)
    except requests.RequestException as error:
        tally.errors.append(f"POST /jobs: {type(error).__name__}")
        return None
    tally.post_ms.append((time.perf_counter() - started) * 1000)
    if response.status_code != 201:
        tally.errors.append(f"POST /jobs: {response.status_code} {response.text[:120]}")
        return None
    created: dict[str, object] = response.json()
    started = time.perf_counter()
    try:
        read = session.get(
            f"{api}/jobs/{created['job_id']}", headers={"X-Owner-Id": owner}, timeout=30
        )
    except requests.RequestException as error:
        tally.errors.append(f"GET /jobs/{{id}}: {type(error).__name__}")
        return None
    tally.get_ms.append((time.perf_counter() - started) * 1000)
    if read.status_code != 200:
        tally.errors.append(f"GET /jobs/{{id}}: {read.status_code}")
    return created


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _session() -> requests.Session:
    session = requests.Session()
    session.headers["X-Api-Key"] = API_KEY
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("http://", adapter)
    return session


def run(args: argparse.Namespace) -> int:
    song = _song(args.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="mastering-load-") as folder,
        _serve(args.workers, Path(folder)) as (api, process),
    ):
        session = _session()
        memory_before = _tree_rss_mb(process.pid)
        tally = Tally()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(
                pool.map(
                    lambda n: _create(session, api, f"load-{n % args.owners}", len(song), tally),
                    range(args.creations),
                )
            )
        creation_s = time.perf_counter() - started

        mastering = Tally()
        started = time.perf_counter()
        jobs: list[tuple[str, str]] = []
        for n in range(args.jobs):
            owner = f"master-{n}"
            created = _create(session, api, owner, len(song), mastering)
            if created is None:
                continue
            upload = created["uploads"]["target"]  # type: ignore[index]
            response = requests.post(
                upload["url"],
                data=upload["fields"],
                files={"file": ("load.wav", song, "audio/wav")},
                timeout=60,
            )
            if response.status_code not in (200, 201, 204):
                mastering.errors.append(f"upload: {response.status_code}")
                continue
            jobs.append((str(created["job_id"]), owner))
        outcomes: dict[str, str] = {}
        deadline = time.monotonic() + MASTERING_DEADLINE_S
        while len(outcomes) < len(jobs) and time.monotonic() < deadline:
            for job_id, owner in jobs:
                if job_id in outcomes:
                    continue
                body = session.get(
                    f"{api}/jobs/{job_id}", headers={"X-Owner-Id": owner}, timeout=30
                ).json()
                if body["status"] in ("succeeded", "failed", "expired", "cancelled"):
                    outcomes[job_id] = body["status"]
                    if body["status"] != "succeeded":
                        mastering.errors.append(f"job {body['status']}: {body['error']}")
            time.sleep(0.5)
        mastering_s = time.perf_counter() - started
        if len(outcomes) < len(jobs):
            mastering.errors.append(f"{len(jobs) - len(outcomes)} jobs did not end in time")
        memory_after = _tree_rss_mb(process.pid)
        if tally.errors or mastering.errors:
            log_tail = (Path(folder) / "serve.log").read_text(errors="replace")[-4000:]
            print(f"--- the stack's log, last lines ---\n{log_tail}\n---", file=sys.stderr)

    errors = tally.errors + mastering.errors
    print(
        f"job creations: {args.creations} at concurrency {args.concurrency} in {creation_s:.1f} s"
    )
    for name, values in (("POST /jobs", tally.post_ms), ("GET /jobs/{id}", tally.get_ms)):
        print(
            f"  {name:<15} p50 {statistics.median(values) if values else float('nan'):6.1f} ms"
            f"   p99 {_percentile(values, 0.99):6.1f} ms   ({len(values)} answers)"
        )
    succeeded = sum(1 for status in outcomes.values() if status == "succeeded")
    print(
        f"masterings: {succeeded}/{args.jobs} succeeded ({args.seconds:g}-s targets, "
        f"{args.workers} workers) in {mastering_s:.1f} s = "
        f"{mastering_s / max(1, len(jobs)):.2f} s per job"
    )
    print(
        f"stack memory (RSS of the process tree): {memory_before:.0f} MB before, "
        f"{memory_after:.0f} MB after"
    )
    print(f"errors: {len(errors)}")
    for error in errors[:20]:
        print(f"  {error}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--owners", type=int, default=40, help="owners the creations spread over")
    parser.add_argument("--jobs", type=int, default=20, help="jobs mastered")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each target")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
