"""Loading the pipeline or the master handler pulls in no numerics."""

from __future__ import annotations

import json
import subprocess
import sys

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
