"""A one-line progress bar of stage and percent, on stderr.

On a terminal the line redraws in place; anywhere else (a log file, CI, a pipe)
each change is one plain line, so logs stay readable.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

_WIDTH = 30


def _label(stage: str) -> str:
    return stage.replace("_", " ")


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, *, prefix: str = "") -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._prefix = prefix
        self._tty = self._stream.isatty()
        self._last: tuple[str, int] | None = None
        self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, stage: str, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        if (stage, percent) == self._last:
            return
        self._last = (stage, percent)
        if self._tty:
            filled = round(_WIDTH * percent / 100)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            # \r back to the line start, \x1b[K clears what a longer label left behind.
            self._stream.write(f"\r{self._prefix}[{bar}] {percent:3d}% {_label(stage)}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(f"{self._prefix}{percent:3d}% {_label(stage)}\n")
        self._stream.flush()

    def close(self) -> None:
        """End the redrawn line so what follows starts on a fresh one."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
