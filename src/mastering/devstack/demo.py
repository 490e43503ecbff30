"""``make demo``: the whole flow on the local stack, with audio made up on the spot.

Starts ``mastering serve`` on free ports, synthesises a quiet, dull target and a
loud, bright reference (no recorded music involved), runs ``mastering submit``
against the stack, and leaves inputs and results in ``demo-output/``. The stack
is stopped on every path, including failures and Ctrl-C.

    .venv/bin/python -m mastering.devstack.demo [--output-dir demo-output]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mastering.devstack.processes import free_port

RATE = 44_100
SECONDS = 8.0
API_KEY = "demo-key"
_READY_TIMEOUT_S = 90.0
_STOP_GRACE_S = 30.0


def _tone(
    seconds: float, *, seed: int, harmonics: int, peak_dbfs: float, hiss: float
) -> npt.NDArray[np.float64]:
    """A few decaying notes over a chord: ``harmonics`` sets how bright it is."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.exp(-3.0 * np.mod(t, 0.5)) * (0.7 + 0.3 * np.sin(2 * np.pi * 0.25 * t))
    signal_ = np.zeros((t.size, 2))
    for channel in range(2):
        voice = np.zeros(t.size)
        for f0 in (110.0, 164.8, 220.0, 277.2):
            for k in range(1, harmonics + 1):
                voice += np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
        noise = rng.standard_normal(t.size)
        signal_[:, channel] = envelope * (voice + hiss * noise)
    peak = float(np.max(np.abs(signal_))) or 1.0
    return signal_ * (10 ** (peak_dbfs / 20) / peak)


def _write_wav(path: Path, samples: npt.NDArray[np.float64]) -> Path:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as sink:
        sink.setnchannels(samples.shape[1])
        sink.setsampwidth(2)
        sink.setframerate(RATE)
        sink.writeframes(pcm.tobytes())
    return path


def _lufs(path: Path) -> str:
    import soundfile as sf

    from mastering.engine.loudness import LoudnessMeter

    samples, rate = sf.read(path, always_2d=True, dtype="float32")
    meter = LoudnessMeter(rate, channels=samples.shape[1])
    meter.push(samples)
    value = meter.integrated()
    return "n/a" if value is None else f"{value:6.1f} LUFS"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(serve: subprocess.Popen[bytes], url: str, log: Path) -> None:
    import requests

    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(
                f"mastering serve exited with status {serve.returncode}:\n{_tail(log)}"
            )
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the local stack did not answer within {_READY_TIMEOUT_S:g} s:\n{_tail(log)}"
    )


def _stop(serve: subprocess.Popen[bytes]) -> None:
    """SIGINT as Ctrl-C would, then wait; kill the whole group if it hangs."""
    if serve.poll() is None:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            print("the local stack did not stop in time; killing it", file=sys.stderr)
    # Its own process group (start_new_session): this also reaps stray workers.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(serve.pid, signal.SIGKILL)
    serve.wait()


def run_demo(output_dir: Path) -> int:
    started = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    target = _write_wav(
        output_dir / "demo-target.wav",
        _tone(SECONDS, seed=1, harmonics=2, peak_dbfs=-20.0, hiss=0.02),
    )
    reference = _write_wav(
        output_dir / "demo-reference.wav",
        _tone(SECONDS, seed=2, harmonics=8, peak_dbfs=-1.0, hiss=0.15),
    )
    api_port = free_port()
    s3_port = free_port()
    while s3_port == api_port:
        s3_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    cli = [sys.executable, "-m", "mastering.cli"]
    with tempfile.TemporaryDirectory(prefix="mastering-demo-") as scratch:
        log = Path(scratch) / "serve.log"
        with log.open("wb") as log_sink:
            serve = subprocess.Popen(
                [
                    *cli,
                    "serve",
                    "--api-port",
                    str(api_port),
                    "--s3-port",
                    str(s3_port),
                    "--api-key",
                    API_KEY,
                    "--work-dir",
                    str(Path(scratch) / "work"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            print(f"Starting the local stack on {api} ...", flush=True)
            _wait_ready(serve, api, log)
            print("Submitting the demo job:", flush=True)
            submitted = subprocess.run(
                [
                    *cli,
                    "submit",
                    str(target),
                    "--reference",
                    str(reference),
                    "--format",
                    "wav16",
                    "--format",
                    "mp3",
                    "--output-dir",
                    str(output_dir),
                    "--api",
                    api,
                    "--api-key",
                    API_KEY,
                    "--timeout",
                    "600",
                ],
                check=False,
            )
            if submitted.returncode != 0:
                print(f"\nThe demo job failed. Local stack log:\n{_tail(log)}", file=sys.stderr)
                return submitted.returncode
        finally:
            _stop(serve)
    mastered = output_dir / f"{target.stem}-mastered.wav"
    print(
        f"\nDemo done in {time.monotonic() - started:.1f} s. Listen in {output_dir}/:\n"
        f"  before     {target.name:28} {_lufs(target)}\n"
        f"  reference  {reference.name:28} {_lufs(reference)}\n"
        f"  after      {mastered.name:28} {_lufs(mastered)}\n"
        f"  (also {mastered.with_suffix('.mp3').name})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mastering.devstack.demo", description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    args = parser.parse_args(argv)
    try:
        return run_demo(args.output_dir)
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
