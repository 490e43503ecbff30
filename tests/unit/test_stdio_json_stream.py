"""The stdio backend's JSON stream decoder: requests in any layout and any chunking,
and one error per piece of garbage, after which the next request is read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from mastering.cli.json_stream import Decoded, Garbage, Item, JsonStream

REQUEST = {"user_track": "/music/my take.wav", "reference_track": "/music/ref.wav"}
OTHER = {"user_track": "/music/b.wav", "preset": "Warm", "mastering": {"loudness": -14}}


def decode(*chunks: bytes, stream: JsonStream | None = None) -> list[Item]:
    stream = stream or JsonStream()
    items = [item for chunk in chunks for item in stream.feed(chunk)]
    return items + stream.close()


def values(items: Iterable[Item]) -> list[Any]:
    return [item.value if isinstance(item, Decoded) else "GARBAGE" for item in items]


def test_a_pretty_printed_request_is_one_value() -> None:
    # Given a request written over several lines, as json.dumps(indent=4) writes it
    text = json.dumps(OTHER, indent=4).encode() + b"\n"
    assert text.count(b"\n") > 3
    # When it is decoded
    items = decode(text)
    # Then it is one value, whole
    assert values(items) == [OTHER]


def test_several_requests_on_one_line_come_out_in_order() -> None:
    line = (json.dumps(REQUEST) + json.dumps(OTHER) + " " + json.dumps(REQUEST) + "\n").encode()
    assert values(decode(line)) == [REQUEST, OTHER, REQUEST]


@pytest.mark.parametrize("layout", ["compact", "pretty"])
def test_a_request_split_anywhere_across_reads_is_whole(layout: str) -> None:
    # Given two requests, one with a two-byte character, cut at every possible byte
    first = {**REQUEST, "user_track": "/music/café.wav"}
    indent = 2 if layout == "pretty" else None
    data = (json.dumps(first, indent=indent, ensure_ascii=False) + "\n").encode()
    data += (json.dumps(OTHER, indent=indent) + "\n").encode()
    for cut in range(1, len(data)):
        # When the first read ends at the cut and the second brings the rest
        stream = JsonStream()
        before = stream.feed(data[:cut])
        after = stream.feed(data[cut:]) + stream.close()
        # Then nothing is reported early and both requests arrive whole, in order
        assert all(isinstance(item, Decoded) for item in before), cut
        assert values(before + after) == [first, OTHER], cut


def test_nothing_is_answered_while_a_request_is_unfinished() -> None:
    # Given the first lines of a pretty-printed request
    stream = JsonStream()
    # When only they have arrived
    # Then there is no value and no error yet
    assert stream.feed(b'{\n  "user_track": "/a.wav",\n') == []
    assert stream.feed(b'  "reference_track": "/b.wav"\n') == []
    # And the closing brace completes it
    assert values(stream.feed(b"}\n")) == [{"user_track": "/a.wav", "reference_track": "/b.wav"}]


def test_a_number_at_the_end_of_a_read_waits_for_its_last_digits() -> None:
    stream = JsonStream()
    assert stream.feed(b"12") == []
    assert values(stream.feed(b"3\n")) == [123]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"this is not json\n", "Expecting value at line 1 column 1"),
        (b'{"user_track": "a.wav"\n', "Expecting ',' delimiter at line 2 column 1"),
        (b"{\n  'user_track': 'a.wav',\n  'reference_track': 'b.wav'\n}\n", "double quotes"),
        (b'{\n  "user_track": "a.wav",\n  "reference_track": b.wav\n}\n', "line 3 column 22"),
        (b'{"user_track": "a.wav\n", "reference_track": "b.wav"}\n', "Invalid control char"),
        (b"}}}\n", "Expecting value"),
    ],
    ids=[
        "text",
        "unclosed",
        "single-quotes",
        "pretty-printed-bad-value",
        "newline-in-string",
        "braces",
    ],
)
def test_garbage_costs_one_error_and_the_next_request_is_read(garbage: bytes, reason: str) -> None:
    # Given garbage followed by a request on a line of its own
    # When both are decoded
    items = decode(garbage + json.dumps(REQUEST).encode() + b"\n")
    # Then the garbage is one error that says where it went wrong, then the request comes
    assert values(items) == ["GARBAGE", REQUEST]
    report = items[0]
    assert isinstance(report, Garbage)
    assert reason in report.reason
    # And the report shows the garbage, not the request after it
    assert report.excerpt
    assert report.excerpt in garbage.decode()


def test_garbage_arriving_in_pieces_is_still_one_error() -> None:
    # Given garbage whose lines arrive in several reads, then a request
    chunks = [b"garbage ga", b"rbage\nmore", b" garbage\n  ", b'  {"a"', b": 1}\n"]
    # Then it is one error, and the indented request after it is read
    assert values(decode(*chunks)) == ["GARBAGE", {"a": 1}]


def test_the_rest_of_the_line_garbage_starts_on_is_dropped() -> None:
    # Given a bad value and a good one on the same line, then a good one on the next
    items = decode(b'{"a": nope} {"b": 2}\n{"c": 3}\n')
    # Then the error costs its line: the next line's request is read
    assert values(items) == ["GARBAGE", {"c": 3}]


def test_an_unfinished_request_at_the_end_of_input_is_an_error() -> None:
    # Given input that ends inside a request
    items = decode(json.dumps(REQUEST).encode() + b'\n{"user_track": "/a.w')
    # Then the complete request comes, then one error for the rest
    assert values(items) == [REQUEST, "GARBAGE"]
    assert isinstance(items[1], Garbage)
    assert items[1].reason == "incomplete JSON at the end of the input"


def test_an_endless_value_is_refused_without_keeping_it() -> None:
    # Given a string that never ends, longer than any request, then a request
    stream = JsonStream(max_value_chars=1000)
    items = stream.feed(b'{"user_track": "' + b"x" * 2000)
    # Then it is an error once it is too long, not a wait for ever
    assert values(items) == ["GARBAGE"]
    assert isinstance(items[0], Garbage)
    assert "longer than 1000 characters" in items[0].reason
    # And what follows on a new line is read
    assert values(stream.feed(b"xxx\n" + json.dumps(OTHER).encode() + b"\n")) == [OTHER]


def test_blank_lines_and_windows_line_ends_are_not_requests() -> None:
    text = b"\r\n\r\n" + json.dumps(REQUEST).encode() + b"\r\n\r\n  \r\n"
    assert values(decode(text)) == [REQUEST]


def test_bytes_that_are_not_utf8_do_not_end_the_stream() -> None:
    # Given a path in Latin-1, as an older host might send it
    items = decode(b'{"user_track": "/music/caf\xe9.wav", "reference_track": "/r.wav"}\n')
    # Then it is decoded, the byte kept as the file system needs it
    (item,) = items
    assert isinstance(item, Decoded)
    assert item.value["user_track"].encode("utf-8", "surrogateescape") == b"/music/caf\xe9.wav"
