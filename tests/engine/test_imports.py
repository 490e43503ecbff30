"""Loading the pipeline or the master handler pulls in no numerics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HEAVY = ("numpy", "scipy", "statsmodels", "matchering", "soundfile", "pyloudnorm")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO / "functions" / "master",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


@pytest.mark.parametrize(
    "code",
    [
        "import mastering.pipeline",
        "import mastering.engine.profile",
        "import app",  # functions/master/app.py, as Lambda loads it
    ],
)
def test_no_heavy_module_at_import(code: str) -> None:
    loaded = _loaded_after(code)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_the_master_handler_loads_neither_the_xray_sdk_nor_pydantic() -> None:
    # Given the master function's module as Lambda loads it
    loaded = _loaded_after("import app")
    # Then neither of the two cold-start costs it has no use for is paid (about 0.2 s
    # for the X-Ray SDK's sampling clients, 0.1 s for pydantic's request models)
    assert not [m for m in loaded if m.split(".")[0] in ("aws_xray_sdk", "pydantic")]


def test_the_engine_never_imports_statsmodels_or_matchering() -> None:
    loaded = _loaded_after(
        "import mastering.pipeline as p\n"
        "p.preload_engine()\n"
        "from mastering.engine.preset_audio import preset_profile\n"
        "from mastering.presets import PRESETS\n"
        "preset_profile(PRESETS['balanced'])"
    )
    assert "numpy" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("statsmodels", "matchering", "numba")]


def test_a_whole_job_imports_only_the_ffts_of_scipy(tmp_path: Path) -> None:
    # Given a target and a reference file
    from tests.audio_factory import tone_mix, write_wav

    target = write_wav(tmp_path / "t.wav", tone_mix(3.0, 48_000, seed=1, peak_dbfs=-16.0), 48_000)
    reference = write_wav(tmp_path / "r.wav", tone_mix(3.0, 44_100, seed=2), 44_100)
    # When a fresh process masters them through the pipeline, metrics included
    loaded = _loaded_after(
        "from pathlib import Path\n"
        "from mastering.formats import OutputFormat\n"
        "from mastering.pipeline import MasteringRequest, master_files\n"
        f"request = MasteringRequest(target=Path({str(target)!r}), "
        f"reference=Path({str(reference)!r}), outputs=(OutputFormat.WAV16,), "
        f"work_dir=Path({str(tmp_path)!r}), min_duration_s=1.0, max_duration_s=60.0)\n"
        "outcome = master_files(request, lambda stage, percent: None)\n"
        "assert outcome.metrics['result_lufs'] is not None\n"
        "from mastering.engine import fft\n"
        "assert fft.backend() in ('pyduccfft', 'pypocketfft'), fft.backend()\n"
    )
    # Then of scipy only its compiled FFTs were loaded (engine.fft), not even the
    # scipy.fft package (its array-API layer and scipy.special, ~0.18 s), nor the
    # slow-to-import signal, interpolate, stats, ndimage or optimize (about 1.5 s
    # together), nor the dev-only oracles (pyloudnorm, matchering)
    slow = ("scipy.signal", "scipy.interpolate", "scipy.stats", "scipy.ndimage", "scipy.optimize")
    assert not [m for m in loaded if m.startswith(("scipy.fft", "scipy.special"))]
    assert "numpy.f2py" not in loaded
    assert not [m for m in loaded if m.startswith(slow)]
    assert not [m for m in loaded if m.split(".")[0] in ("pyloudnorm", "matchering", "numba")]
