"""The plugin's requests as the stdio backend reads them: tracks, a preset instead of a
reference, and mastering options resolved as the API resolves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mastering.cli.stdio_protocol import (
    RequestRefused,
    check_files,
    describe,
    parse_request,
)
from mastering.options import Limiter, MasteringOptions, RequestedOptions, resolve_options
from mastering.presets import PRESETS


def test_a_reference_request_gets_the_default_options() -> None:
    # When the plugin sends the original protocol's two fields
    request = parse_request({"user_track": "/a/song.wav", "reference_track": "/b/ref.wav"})
    # Then both tracks are taken, no preset, and the service's defaults apply
    assert (request.user_track, request.reference_track) == (
        Path("/a/song.wav"),
        Path("/b/ref.wav"),
    )
    assert request.preset is None
    assert request.options == MasteringOptions()


@pytest.mark.parametrize("name", ["warm", "Warm", "WARM", " warm "])
def test_a_preset_is_found_by_id_or_name_in_any_case(name: str) -> None:
    # When a preset stands in for the reference
    request = parse_request({"user_track": "/a/song.wav", "preset": name})
    # Then it is that preset, and its own loudness, ceiling and intensity apply
    warm = PRESETS["warm"]
    assert request.preset == warm
    assert request.reference_track is None
    assert request.options == resolve_options(RequestedOptions(), warm.defaults())
    assert request.options.loudness_lufs == warm.loudness_lufs


def test_mastering_options_override_the_presets() -> None:
    # When a preset request also sets a loudness platform and an intensity
    request = parse_request(
        {
            "user_track": "/a/song.wav",
            "preset": "Bright",
            "mastering": {"loudness": "Apple_Music", "intensity": 0.25},
        }
    )
    # Then those win and the rest comes from the preset
    assert request.options.loudness == "apple_music"
    assert request.options.loudness_lufs == -16.0
    assert request.options.intensity == 0.25
    assert request.options.true_peak_dbtp == PRESETS["bright"].true_peak_dbtp
    assert request.options.limiter is Limiter.TRUE_PEAK


def test_the_matchering_limiter_is_passed_on() -> None:
    request = parse_request(
        {
            "user_track": "/a.wav",
            "reference_track": "/b.wav",
            "mastering": {"limiter": "matchering"},
        }
    )
    assert request.options.limiter is Limiter.MATCHERING
    assert request.options.true_peak_dbtp is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ("song.wav", "expected a JSON object"),
        ({"reference_track": "/b.wav"}, "'user_track' must be a file path"),
        ({"user_track": 3, "reference_track": "/b.wav"}, "'user_track' must be a file path"),
        ({"user_track": "  ", "reference_track": "/b.wav"}, "'user_track' must be a file path"),
        ({"user_track": "/a.wav"}, "'reference_track' must be a file path"),
        (
            {"user_track": "/a.wav", "reference_track": "/b.wav", "preset": "warm"},
            "give 'reference_track' or 'preset', not both",
        ),
        ({"user_track": "/a.wav", "preset": 7}, "'preset' must be a preset's id or name"),
        ({"user_track": "/a.wav", "preset": "Polka"}, "there is no preset 'Polka'; choose one of"),
        (
            {"user_track": "/a.wav", "preset": "warm", "mastering": {"true_peak_dbtp": 3}},
            "mastering.true_peak_dbtp: must be between -9 and 0 dBTP",
        ),
        (
            {"user_track": "/a.wav", "preset": "warm", "mastering": {"loudness": "radio"}},
            "mastering.loudness: 'radio' is not a loudness",
        ),
        (
            {"user_track": "/a.wav", "preset": "warm", "mastering": {"volume": 11}},
            "mastering.volume: unknown option",
        ),
        (
            {"user_track": "/a.wav", "preset": "warm", "mastering": "loud"},
            "mastering: must be an object",
        ),
        (
            {
                "user_track": "/a.wav",
                "reference_track": "/b.wav",
                "mastering": {"limiter": "matchering", "loudness": -14},
            },
            "mastering.loudness: the matchering limiter sets its own loudness",
        ),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(data: Any, message: str) -> None:
    # When the request is malformed or asks for something that does not exist
    with pytest.raises(RequestRefused) as refused:
        parse_request(data)
    # Then the reply says so, naming the field
    assert refused.value.message.startswith("Invalid request: ")
    assert message in refused.value.message


def test_missing_and_misnamed_files_are_refused(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    missing = parse_request({"user_track": str(song), "reference_track": "/nowhere/ref.wav"})
    with pytest.raises(RequestRefused, match=r"^reference_track not found: /nowhere/ref.wav$"):
        check_files(missing)
    folder = parse_request({"user_track": str(tmp_path), "preset": "warm"})
    with pytest.raises(RequestRefused, match=r"^user_track is not a file: "):
        check_files(folder)
    check_files(parse_request({"user_track": str(song), "preset": "warm"}))


def test_fields_of_the_older_protocol_are_ignored_and_logged_as_such() -> None:
    # Given a request with the older protocol's extra fields
    data = {"user_track": "/a.wav", "reference_track": "/b.wav", "output_path": "/x.wav"}
    # Then it is served as if they were absent, and the log line says they were ignored
    assert parse_request(data).reference_track == Path("/b.wav")
    assert describe(data).endswith("(ignored: output_path)")
