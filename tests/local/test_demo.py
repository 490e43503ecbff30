"""`make demo` as a new user runs it: the whole flow on a local stack it starts itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.serve_process import serve_env
from tests.oracles import ffmpeg_meter

# Guards against a hung demo, not a performance check.
DEMO_DEADLINE_S = 300.0


@pytest.mark.slow
def test_the_demo_masters_its_target_to_the_references_loudness(tmp_path: Path) -> None:
    # Given a shell without the test session's settings
    output = tmp_path / "demo-output"
    # When the demo runs
    done = subprocess.run(
        [sys.executable, "-m", "mastering.devstack.demo", "--output-dir", str(output)],
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=DEMO_DEADLINE_S,
        check=False,
    )
    # Then it ends well and says where the files are
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Demo done" in done.stdout
    mastered = output / "demo-target-mastered.wav"
    assert mastered.exists()
    assert (output / "demo-target-mastered.mp3").exists()
    # And the master lands at the reference's loudness under the -1 dBTP ceiling, as
    # ffmpeg measures it, and as the demo prints it
    reference = ffmpeg_meter(output / "demo-reference.wav")
    result = ffmpeg_meter(mastered)
    assert result.lufs == pytest.approx(reference.lufs, abs=0.5)
    assert result.true_peak_dbtp <= -1.0
    printed = re.search(r"after\s+\S+\s+(-?\d+\.\d) LUFS", done.stdout)
    assert printed is not None, done.stdout
    assert float(printed.group(1)) == pytest.approx(result.lufs, abs=0.2)
