"""The MasterMatcherVST plugin's requests and replies.

A request is a JSON object:

    {"user_track": PATH, "reference_track": PATH}
    {"user_track": PATH, "preset": ID_OR_NAME}
    ... optionally with "mastering": {"loudness", "true_peak_dbtp", "intensity", "limiter"}

Exactly one of ``reference_track`` and ``preset``. Other fields (the older protocol's
``output_path``, ``intensity`` at the top level, ...) are ignored, as the original
backend ignored them. A reply is ``{"status": "success", "output_path", "message"}``
or ``{"status": "error", "message"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastering.errors import InvalidRequest
from mastering.options import MasteringOptions, parse_mastering_options, resolve_options
from mastering.presets import PRESETS, Preset, find_preset

Reply = dict[str, str]
TRACK_FIELDS = ("user_track", "reference_track")
KNOWN_FIELDS = (*TRACK_FIELDS, "preset", "mastering")


class RequestRefused(Exception):
    """A request that cannot be served as sent; the message is the plugin's reply."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TrackRequest:
    user_track: Path
    reference_track: Path | None
    preset: Preset | None
    options: MasteringOptions


def error_reply(message: str) -> Reply:
    return {"status": "error", "message": message}


def success_reply(output_path: Path, message: str) -> Reply:
    return {"status": "success", "output_path": str(output_path), "message": message}


def _invalid(reason: str) -> RequestRefused:
    return RequestRefused(f"Invalid request: {reason}")


def _path_field(data: Mapping[str, Any], key: str) -> Path:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"'{key}' must be a file path")
    return Path(value)


def parse_request(data: Any) -> TrackRequest:
    """The request's shape and options, checked; the files it names are not looked at."""
    if not isinstance(data, dict):
        raise _invalid("expected a JSON object")
    user_track = _path_field(data, "user_track")
    has_reference = data.get("reference_track") is not None
    has_preset = data.get("preset") is not None
    if has_reference and has_preset:
        raise _invalid("give 'reference_track' or 'preset', not both")
    reference_track: Path | None = None
    preset: Preset | None = None
    if has_preset:
        name = data["preset"]
        if not isinstance(name, str) or not name.strip():
            raise _invalid("'preset' must be a preset's id or name")
        preset = find_preset(name)
        if preset is None:
            raise _invalid(f"there is no preset '{name}'; choose one of {', '.join(PRESETS)}")
    else:
        # Without a preset a reference is required: the message names the field the
        # plugin always sends.
        reference_track = _path_field(data, "reference_track")
    try:
        requested = parse_mastering_options(data.get("mastering"))
    except InvalidRequest as error:
        raise _invalid(error.message) from None
    options = resolve_options(requested, preset.defaults() if preset is not None else None)
    return TrackRequest(user_track, reference_track, preset, options)


def check_files(request: TrackRequest) -> None:
    """Each named file exists and is a file, as the plugin named it."""
    tracks = {"user_track": request.user_track, "reference_track": request.reference_track}
    for key, path in tracks.items():
        if path is None:
            continue
        if not path.is_file():
            what = "is not a file" if path.exists() else "not found"
            raise RequestRefused(f"{key} {what}: {path}")


def describe(data: Any) -> str:
    """A request in a log line: its files and options, or its start when it has none."""
    if isinstance(data, dict):
        shown = {key: data[key] for key in KNOWN_FIELDS if key in data}
        ignored = sorted(str(key) for key in data if key not in KNOWN_FIELDS)
        text = json.dumps(shown or data, ensure_ascii=False, default=str)
        if ignored:
            text += f" (ignored: {', '.join(ignored)})"
    else:
        text = json.dumps(data, ensure_ascii=False, default=str)
    return text if len(text) <= 500 else text[:500] + "..."
