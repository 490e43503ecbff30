"""Builds and lint: what `sam validate`, `sam build`, `make` and hadolint say about the
stack, and the ffmpeg recipe that the master image runs. No Docker, no AWS.

``sam build`` of the zip function fetches Lambda-platform wheels with pip (from the
machine's package index configuration); everything else is offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.stack import REPO, TEMPLATE

DOCKERFILE = REPO / "functions" / "master" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
FETCH_FFMPEG = REPO / "layers" / "ffmpeg" / "fetch_ffmpeg.py"
PRESIGN_DIR = REPO / "functions" / "presign"
BIN_DIR = Path(sys.executable).parent
SAM = BIN_DIR / "sam"
CFN_LINT = BIN_DIR / "cfn-lint"
HADOLINT = BIN_DIR / "hadolint"


def _sam_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_DEFAULT_REGION="us-east-1",
        # The makefile builds run `$(PYTHON) -m pip`: use this interpreter, which has pip.
        PYTHON=sys.executable,
    )
    env.update(extra)
    return env


def _run(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO,
        env=env or _sam_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tool(path: Path) -> Path:
    # The dev extra installs these; a missing one is a broken install, not a skip.
    assert path.exists(), f"{path.name} is not installed next to {sys.executable} (make install)"
    return path


# ---------------------------------------------------------------- lint


def test_sam_validate_lint_passes() -> None:
    result = _run([str(_tool(SAM)), "validate", "--lint", "--template-file", str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_cfn_lint_has_no_findings_even_informational() -> None:
    result = _run([str(_tool(CFN_LINT)), "--include-checks", "I", "--", str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_clean() -> None:
    result = _run([str(_tool(HADOLINT)), str(DOCKERFILE)], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the zip function


@pytest.mark.parametrize(("arch", "so_arch"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_sam_build_of_the_zip_function_has_what_its_handlers_import(
    tmp_path: Path, arch: str, so_arch: str
) -> None:
    # Given `sam build` of the presign/lifecycle zip for an architecture, no Docker
    result = _run(
        [
            str(_tool(SAM)),
            "build",
            "PresignFunction",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(tmp_path / "build"),
            "--parameter-overrides",
            f"Architecture={arch}",
        ],
        env=_sam_env(LAMBDA_ARCH=arch),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    artifact = tmp_path / "build" / "PresignFunction"
    # Then every handler is there, with everything it imports at load time
    handlers = sorted(p.name for p in PRESIGN_DIR.glob("*.py"))
    for handler in handlers:
        assert (artifact / handler).is_file(), handler
    _assert_zip_is_self_contained(artifact, handlers)
    # And native code is built for Lambda's Python and that architecture
    native = list((artifact / "pydantic_core").glob("_pydantic_core.cpython-312-*.so"))
    assert [p.name for p in native] == [f"_pydantic_core.cpython-312-{so_arch}-linux-gnu.so"]
    # And the numeric stack stays in the image, out of the zip
    for heavy in ("numpy", "scipy", "soundfile", "matchering", "numba"):
        assert not (artifact / heavy).exists(), f"{heavy} must not be in the zip"
    assert not list(artifact.rglob("__pycache__"))


def _module_level_imports(source: Path, package: str) -> set[str]:
    """Modules imported when ``source`` is loaded (not those imported inside functions,
    which is how the code defers numpy & co., nor ``if TYPE_CHECKING:`` blocks)."""
    import ast

    found: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        blocks = [node]
        if isinstance(node, ast.Try):
            blocks = [*node.body, *(h for handler in node.handlers for h in handler.body)]
        for stmt in blocks:
            if isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:
                    base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    module = ".".join([*base, stmt.module] if stmt.module else base)
                else:
                    module = stmt.module or ""
                found.add(module)
                # `from pkg import submodule` loads pkg/submodule.py too.
                found.update(f"{module}.{alias.name}" for alias in stmt.names)
    return found


def _assert_zip_is_self_contained(artifact: Path, handlers: list[str]) -> None:
    """Every module the handlers load at import time, transitively through the
    `mastering` package, is either the standard library or in the zip."""
    stdlib = set(sys.stdlib_module_names)
    queue = [(artifact / h, "") for h in handlers]
    seen: set[Path] = set()
    missing: set[str] = set()
    while queue:
        path, package = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _module_level_imports(path, package):
            top = module.split(".")[0]
            if top in stdlib or top == "__future__":
                continue
            if top != "mastering":
                if not ((artifact / top).is_dir() or (artifact / f"{top}.py").is_file()):
                    missing.add(f"{top} (imported by {path.relative_to(artifact)})")
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                stem = artifact.joinpath(*parts[:depth])
                pkg = ".".join(parts[:depth])
                if (stem / "__init__.py").is_file():
                    queue.append((stem / "__init__.py", pkg))
                elif stem.with_suffix(".py").is_file():
                    queue.append((stem.with_suffix(".py"), ".".join(parts[: depth - 1])))
    assert not missing, f"not in the zip: {sorted(missing)}"


# ---------------------------------------------------------------- ffmpeg


def _fetch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_ffmpeg", FETCH_FFMPEG)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fetch_ffmpeg", module)
    spec.loader.exec_module(module)
    return module


def test_fetch_ffmpeg_uses_the_standard_library_only() -> None:
    import ast

    tree = ast.parse(FETCH_FFMPEG.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_fetch_ffmpeg_pins_both_architectures() -> None:
    fetch = _fetch_module()
    for arch in ("x86_64", "aarch64"):
        pin = fetch.PINNED[(fetch.IMAGEIO_FFMPEG_VERSION, arch)]
        for digest in (pin.wheel_sha256, pin.binary_sha256):
            assert len(digest) == 64
            int(digest, 16)
        assert f"-{fetch.IMAGEIO_FFMPEG_VERSION}-" in pin.wheel
        assert pin.member.startswith(f"imageio_ffmpeg/binaries/ffmpeg-linux-{arch}-")
    assert fetch.normalise_arch("arm64") == "aarch64"
    assert fetch.normalise_arch("x86_64") == "x86_64"
    with pytest.raises(fetch.FetchError):
        fetch.normalise_arch("sparc")


def test_fetch_ffmpeg_refuses_a_wheel_that_does_not_match_its_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch = _fetch_module()
    pin = fetch.PINNED[(fetch.IMAGEIO_FFMPEG_VERSION, "x86_64")]

    def fake_download(arch: str, into: Path) -> Path:
        wheel: Path = into / pin.wheel
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(pin.member, b"#!/bin/sh\necho not ffmpeg\n")
        return wheel

    monkeypatch.setattr(fetch, "download_wheel", fake_download)
    with pytest.raises(fetch.FetchError, match="does not match pinned"):
        fetch.fetch("x86_64", tmp_path / "bin")
    assert not (tmp_path / "bin" / "ffmpeg").exists()


def _assert_runs_ffmpeg(binary: Path) -> None:
    assert binary.is_file()
    assert binary.stat().st_mode & 0o777 == 0o755
    if platform.machine() != "x86_64":
        return
    result = subprocess.run(
        [str(binary), "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ffmpeg version")


def test_the_layer_makefile_installs_a_working_ffmpeg(tmp_path: Path) -> None:
    # Given the layer recipe run as its README says, outside SAM
    result = _run(
        [
            "make",
            "-f",
            str(REPO / "layers" / "ffmpeg" / "Makefile"),
            "build-FfmpegLayer",
            f"ARTIFACTS_DIR={tmp_path / 'layer'}",
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Then the layer holds only bin/ffmpeg, a working executable
    assert sorted(p.name for p in (tmp_path / "layer").iterdir()) == ["bin"]
    _assert_runs_ffmpeg(tmp_path / "layer" / "bin" / "ffmpeg")


# ---------------------------------------------------------------- the master image


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def test_the_image_gets_ffmpeg_from_the_one_recipe() -> None:
    instructions = _dockerfile()
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(c.startswith("layers/ffmpeg/fetch_ffmpeg.py ") for c in copies)
    assert any("fetch_ffmpeg.py" in args for keyword, args in instructions if keyword == "RUN")


def test_the_image_runs_the_handler_the_template_names() -> None:
    from tests.infra.stack import Deployment, load_template

    deployment = Deployment(load_template())
    command = deployment.resources["MasterFunction"]["Properties"]["ImageConfig"]["Command"]
    cmds = [args for keyword, args in _dockerfile() if keyword == "CMD"]
    assert [json.loads(c) for c in cmds] == [command]


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    # The context is allow-listed; a new COPY needs a matching "!" line.
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    assert "*" in lines, "context should be an allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for keyword, args in _dockerfile():
        if keyword != "COPY":
            continue
        *sources, _dest = args.split()
        for source in sources:
            source = source.rstrip("/")
            assert source in allowed or any(source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )
            assert (REPO / source).exists(), source
