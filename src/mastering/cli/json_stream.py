"""JSON values out of a byte stream: whitespace-separated, any layout, any chunking.

The MasterMatcherVST plugin writes one JSON object per request; nothing promises it
fits on one line (a pretty-printed request spans several), that a line holds one
request, or that a read returns a whole request. ``JsonStream`` is fed whatever
arrived and hands back each complete value, in order.

Hand-written on top of ``json.JSONDecoder.raw_decode`` because the standard library
has no incremental decoder, and the streaming parsers on PyPI (ijson and the like)
stop at the first syntax error, while this backend must answer garbage and carry on.

Incomplete or garbage: when ``raw_decode`` fails at the very end of what has
arrived (inside an unterminated string, a half-written number or ``true``, an
unclosed object), more input may complete the value, so it waits; at the end of the
input such a value is garbage. Any other failure is garbage at once.

Resynchronising after garbage: one ``Garbage`` is reported for it, then input is
dropped up to the next line that starts with ``{`` (after optional blanks) -- the
start of the next request, pretty-printed or not. The search starts at the line
where the error was found, so a broken request spread over several lines costs one
error, and a request that follows on its own line is read. The rest of the line the
garbage started on is dropped with it.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

# A request is a few hundred bytes; anything this long is not one, and is not kept
# in memory waiting for an end that may never come.
MAX_VALUE_CHARS = 1 << 20
EXCERPT_CHARS = 120

_JSON_WHITESPACE = " \t\n\r"
# A line that opens an object: where a request starts.
_VALUE_START = re.compile(r"^[ \t\r\f\v]*\{", re.MULTILINE)
# What a number cut short by the end of a read leaves where raw_decode stopped.
_NUMBER_TAIL = re.compile(r"[-+.0-9eE]+")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")


@dataclass(frozen=True)
class Decoded:
    value: Any
    text: str


@dataclass(frozen=True)
class Garbage:
    """Input that is not JSON; ``reason`` says why and where, ``excerpt`` shows it."""

    reason: str
    excerpt: str


Item = Decoded | Garbage


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _may_continue(buffer: str, error: json.JSONDecodeError) -> bool:
    """Whether the decoder ran into the end of the input rather than a real error."""
    if error.pos >= len(buffer) or error.msg.startswith("Unterminated string"):
        return True
    rest = buffer[error.pos :]
    return bool(_NUMBER_TAIL.fullmatch(rest)) or any(
        literal.startswith(rest) for literal in _LITERALS
    )


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line} column {column}"


class JsonStream:
    """Feed bytes in, get complete JSON values (or garbage reports) out."""

    def __init__(self, max_value_chars: int = MAX_VALUE_CHARS) -> None:
        self._json = json.JSONDecoder()
        # Bytes decoded leniently (a path in another encoding must not end the
        # stream) and incrementally (a character may be split between two reads).
        self._text = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._buffer = ""
        self._max = max_value_chars
        # After garbage: dropping input until a line opens an object.
        self._skipping = False
        # While skipping: the buffer starts in the middle of a line being dropped.
        self._mid_line = False

    def feed(self, data: bytes) -> list[Item]:
        self._buffer += self._text.decode(data)
        return self._drain(at_end=False)

    def close(self) -> list[Item]:
        """The end of the input: what is left is a value, garbage, or nothing."""
        self._buffer += self._text.decode(b"", final=True)
        items = self._drain(at_end=True)
        self._buffer = ""
        return items

    def _drain(self, *, at_end: bool) -> list[Item]:
        items: list[Item] = []
        while True:
            if self._skipping and not self._resynchronise():
                return items
            buffer = self._buffer
            start = len(buffer) - len(buffer.lstrip(_JSON_WHITESPACE))
            if start == len(buffer):
                self._buffer = ""
                return items
            try:
                value, end = self._json.raw_decode(buffer, start)
            except json.JSONDecodeError as error:
                too_long = len(buffer) - start > self._max
                if not at_end and not too_long and _may_continue(buffer, error):
                    self._buffer = buffer[start:]
                    return items
                items.append(self._garbage(buffer, start, error, too_long=too_long))
                self._drop(buffer, start, error.pos)
                continue
            if end == len(buffer) and not at_end and not isinstance(value, dict | list | str):
                # "12" may be the start of "123", "nul" of "null": wait for what follows.
                self._buffer = buffer[start:]
                return items
            items.append(Decoded(value, buffer[start:end]))
            self._buffer = buffer[end:]

    def _garbage(
        self, buffer: str, start: int, error: json.JSONDecodeError, *, too_long: bool
    ) -> Garbage:
        text = buffer[start:]
        # Shown up to the end of the line where it went wrong (what follows is not
        # it), or up to that line when it opens the next request.
        error_line = buffer.rfind("\n", 0, error.pos) + 1
        line_end = buffer.find("\n", error.pos)
        if error_line > start and _VALUE_START.match(buffer, error_line):
            shown = buffer[start:error_line]
        else:
            shown = text if line_end < 0 else buffer[start:line_end]
        if too_long:
            reason = f"longer than {self._max} characters"
        elif _may_continue(buffer, error):
            reason = "incomplete JSON at the end of the input"
        else:
            reason = f"{error.msg} at {_position(text, error.pos - start)}"
        return Garbage(reason, _excerpt(shown))

    def _drop(self, buffer: str, start: int, error_pos: int) -> None:
        error_line = buffer.rfind("\n", 0, error_pos) + 1
        if error_line > start:
            # The error is on a later line than the value's first: that line may
            # already be the next request.
            self._buffer = buffer[error_line:]
            self._mid_line = False
        else:
            self._buffer = buffer[start + 1 :]
            self._mid_line = True
        self._skipping = True

    def _resynchronise(self) -> bool:
        """Drop input up to the next line that opens an object; False if none yet."""
        buffer = self._buffer
        if self._mid_line:
            newline = buffer.find("\n")
            if newline < 0:
                self._buffer = ""
                return False
            buffer = buffer[newline + 1 :]
            self._mid_line = False
        found = _VALUE_START.search(buffer)
        if found is not None:
            self._buffer = buffer[found.end() - 1 :]
            self._skipping = False
            return True
        # Keep only the unfinished last line, and only while it may still open one.
        tail = buffer[buffer.rfind("\n") + 1 :]
        if tail.strip(" \t\r\f\v"):
            self._buffer = ""
            self._mid_line = True
        else:
            self._buffer = tail
        return False
