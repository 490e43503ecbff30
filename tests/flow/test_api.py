"""The HTTP API through its handler: creating jobs, reading them, refusing bad requests."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mastering.versions import ENGINE_VERSION
from tests.conftest import ApiClient

WAV = {"filename": "song.wav", "size": 1_000_000, "content_type": "audio/wav"}
FLAC = {"filename": "ref.flac", "size": 2_000_000, "content_type": "audio/flac"}


def _policy(upload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


def test_create_job_returns_presigned_posts_pinned_to_key_size_and_type(api: ApiClient) -> None:
    # Given a target and a reference declared by the client
    # When it creates a job
    response = api.call("POST", "/jobs", body={"target": WAV, "reference": FLAC})

    # Then the job waits for two uploads, each with a presigned POST
    assert response.status == 201
    body = response.body
    assert body["status"] == "awaiting_upload"
    assert set(body["uploads"]) == {"target", "reference"}
    job_id = body["job_id"]
    for role, declared in (("target", WAV), ("reference", FLAC)):
        upload = body["uploads"][role]
        assert upload["fields"]["key"] == f"uploads/{job_id}/{role}"
        assert upload["expires_at"].endswith("Z")
        # And the decoded policy pins the exact key, the byte range and the content type
        conditions = _policy(upload)["conditions"]
        assert {"key": f"uploads/{job_id}/{role}"} in conditions
        assert ["content-length-range", 1, declared["size"]] in conditions
        assert {"Content-Type": declared["content_type"]} in conditions
        assert upload["fields"]["Content-Type"] == declared["content_type"]


def test_new_job_reads_back_for_its_owner_only(api: ApiClient) -> None:
    # Given a job created by user-1, with metadata
    created = api.call(
        "POST",
        "/jobs",
        body={"target": WAV, "preset": "warm", "metadata": {"track": "t1"}},
        owner="user-1",
    ).body

    # When its owner reads it
    mine = api.call("GET", f"/jobs/{created['job_id']}", owner="user-1")
    # Then the body follows the contract
    assert mine.status == 200
    assert mine.body["status"] == "awaiting_upload"
    assert mine.body["progress"] == {"stage": "awaiting_upload", "percent": 0}
    assert mine.body["metadata"] == {"track": "t1"}
    assert mine.body["error"] is None
    assert mine.body["results"] == {}
    assert set(mine.body) >= {"job_id", "created_at", "updated_at", "metrics"}

    # And another owner, or no owner, gets the same 404 as for a missing job
    for other in ("user-2", None):
        theirs = api.call("GET", f"/jobs/{created['job_id']}", owner=other)
        assert theirs.status == 404
        assert theirs.body["error"]["code"] == "not_found"
    missing = api.call("GET", "/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status == 404
    assert api.call("GET", "/jobs/not-a-job-id").status == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"target": WAV}, 400, "invalid_request"),  # neither reference nor preset
        ({"target": WAV, "reference": FLAC, "preset": "warm"}, 400, "invalid_request"),
        ({"reference": FLAC}, 400, "invalid_request"),  # missing target
        (
            {"target": {"filename": "a.wav", "content_type": "audio/wav"}, "preset": "warm"},
            400,
            "invalid_request",
        ),  # missing size
        ({"target": {**WAV, "size": 0}, "preset": "warm"}, 400, "invalid_request"),
        ({"target": WAV, "preset": "warm", "outputs": ["ogg"]}, 400, "invalid_request"),
        ({"target": WAV, "preset": "warm", "outputs": []}, 400, "invalid_request"),
        ({"target": WAV, "preset": "warm", "metadata": {"x": "y" * 3000}}, 400, "invalid_request"),
        ({"target": WAV, "preset": "warm", "extra": 1}, 400, "invalid_request"),
        ({"target": WAV, "preset": "no-such-preset"}, 400, "unknown_preset"),
        (
            {"target": {**WAV, "size": 1024 * 1024 * 1024 + 1}, "preset": "warm"},
            413,
            "file_too_large",
        ),
        ({"target": WAV, "reference": {**FLAC, "size": 10**12}}, 413, "file_too_large"),
        (
            {
                "target": {"filename": "notes.txt", "size": 10, "content_type": "text/plain"},
                "preset": "warm",
            },
            415,
            "unsupported_format",
        ),
        (
            {
                "target": {
                    "filename": "x.exe",
                    "size": 10,
                    "content_type": "application/octet-stream",
                },
                "preset": "warm",
            },
            415,
            "unsupported_format",
        ),
    ],
)
def test_bad_create_requests_get_a_clear_error(
    api: ApiClient, body: dict[str, Any], status: int, code: str
) -> None:
    # When a client sends a bad job request
    response = api.call("POST", "/jobs", body=body)
    # Then it gets the right status and an error body with a code and a message
    assert response.status == status
    assert response.body["error"]["code"] == code
    assert response.body["error"]["message"]
    assert "Traceback" not in json.dumps(response.body)


def test_body_that_is_not_json_is_invalid_request(api: ApiClient) -> None:
    response = api.call("POST", "/jobs", raw_body="{not json")
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_request"


def test_octet_stream_upload_is_accepted_by_extension(api: ApiClient) -> None:
    # Browsers often send application/octet-stream for .flac and .opus
    body = {
        "target": {
            "filename": "take.opus",
            "size": 5000,
            "content_type": "application/octet-stream",
        },
        "preset": "balanced",
    }
    response = api.call("POST", "/jobs", body=body)
    assert response.status == 201
    # The policy pins the type the browser will send
    assert response.body["uploads"]["target"]["fields"]["Content-Type"] == (
        "application/octet-stream"
    )


@pytest.mark.parametrize("key", [None, "", "wrong-key", "test-api-key-but-longer"])
def test_wrong_or_missing_api_key_is_refused_on_every_protected_route(
    api: ApiClient, key: str | None
) -> None:
    for method, path in (
        ("POST", "/jobs"),
        ("GET", "/presets"),
        ("GET", "/jobs/00000000-0000-4000-8000-000000000000"),
    ):
        response = api.call(method, path, body={"target": WAV, "preset": "warm"}, api_key=key)
        assert response.status == 401, (method, path)
        assert response.body["error"]["code"] == "unauthorized"


def test_health_is_open_and_names_the_engine(api: ApiClient) -> None:
    response = api.call("GET", "/health", api_key=None)
    assert response.status == 200
    assert response.body["status"] == "ok"
    assert response.body["service"] == "spectrum-mastering"
    assert response.body["engine"] == ENGINE_VERSION
    assert "matchering" in response.body["engine"]
    assert response.body["version"]


OLDER_API_PRESETS = [
    "Flat",
    "Bass Boost",
    "Treble Boost",
    "V-Shape",
    "Vocal",
    "Rock",
    "Jazz",
    "Classical",
    "Electronic",
    "Hip-Hop",
    "Podcast",
    "Live",
]


def test_presets_list_their_loudness_ceiling_and_the_platform_targets(api: ApiClient) -> None:
    # When the presets are listed
    response = api.call("GET", "/presets")
    # Then each says what it is and what it aims for
    assert response.status == 200
    presets = response.body["presets"]
    assert {p["id"] for p in presets} >= {"balanced", "warm", "bright", "loud", "gentle"}
    assert {p["name"] for p in presets} >= set(OLDER_API_PRESETS)
    for preset in presets:
        assert set(preset) == {"id", "name", "description", "loudness_lufs", "true_peak_dbtp"}
        assert preset["name"]
        assert preset["description"]
        assert -30.0 <= preset["loudness_lufs"] <= -5.0
        assert -9.0 <= preset["true_peak_dbtp"] <= 0.0
    # And the platform ids a client may give as loudness, with their LUFS
    targets = {t["id"]: t["loudness_lufs"] for t in response.body["loudness_targets"]}
    assert targets == {
        "spotify": -14.0,
        "apple_music": -16.0,
        "youtube": -14.0,
        "tidal": -14.0,
        "amazon_music": -14.0,
        "deezer": -15.0,
        "podcast": -16.0,
        "ebu_r128": -23.0,
    }


@pytest.mark.parametrize(
    ("name", "preset_id"),
    [
        *[(name, name.lower().replace(" ", "-")) for name in OLDER_API_PRESETS],
        ("BALANCED", "balanced"),
        ("hip hop", "hip-hop"),
        ("bass_boost", "bass-boost"),
    ],
)
def test_a_preset_is_found_by_its_display_name_in_any_case(
    api: ApiClient, name: str, preset_id: str
) -> None:
    # Given the older API's names as Spectrum's UI sends them
    # When a job is created with one
    created = api.call("POST", "/jobs", body={"target": WAV, "preset": name})
    # Then it is accepted, and it aims for that preset's own loudness and ceiling
    assert created.status == 201, created.body
    job = api.call("GET", f"/jobs/{created.body['job_id']}").body
    listed = {p["id"]: p for p in api.call("GET", "/presets").body["presets"]}
    assert job["mastering"]["loudness_lufs"] == listed[preset_id]["loudness_lufs"]
    assert job["mastering"]["true_peak_dbtp"] == listed[preset_id]["true_peak_dbtp"]


def test_the_job_echoes_the_options_it_resolved(api: ApiClient) -> None:
    # Given options asked by name and defaults left out
    spotify = api.call(
        "POST",
        "/jobs",
        body={"target": WAV, "reference": FLAC, "mastering": {"loudness": "Spotify"}},
    )
    defaults = api.call("POST", "/jobs", body={"target": WAV, "reference": FLAC})
    fidelity = api.call(
        "POST",
        "/jobs",
        body={"target": WAV, "reference": FLAC, "mastering": {"limiter": "matchering"}},
    )
    # When the jobs are read
    read = {
        name: api.call("GET", f"/jobs/{created.body['job_id']}").body["mastering"]
        for name, created in (("spotify", spotify), ("defaults", defaults), ("fidelity", fidelity))
    }
    # Then the platform is its number, the defaults are DESIGN's, and a reference's own
    # loudness is only known once it is measured
    assert read["spotify"] == {
        "loudness": "spotify",
        "loudness_lufs": -14.0,
        "true_peak_dbtp": -1.0,
        "intensity": 1.0,
        "limiter": "true_peak",
    }
    assert read["defaults"]["loudness"] == "reference"
    assert read["defaults"]["loudness_lufs"] is None
    assert read["defaults"]["true_peak_dbtp"] == -1.0
    assert read["fidelity"]["limiter"] == "matchering"
    assert read["fidelity"]["true_peak_dbtp"] is None


@pytest.mark.parametrize(
    ("mastering", "field"),
    [
        ({"loudness": -31}, "mastering.loudness"),
        ({"loudness": -4.9}, "mastering.loudness"),
        ({"loudness": "tiktok"}, "mastering.loudness"),
        ({"loudness": True}, "mastering.loudness"),
        ({"true_peak_dbtp": 0.5}, "mastering.true_peak_dbtp"),
        ({"true_peak_dbtp": -9.5}, "mastering.true_peak_dbtp"),
        ({"true_peak_dbtp": "loud"}, "mastering.true_peak_dbtp"),
        ({"intensity": 1.5}, "mastering.intensity"),
        ({"intensity": -0.1}, "mastering.intensity"),
        ({"limiter": "brickwall"}, "mastering.limiter"),
        ({"limiter": "matchering", "loudness": -14}, "mastering.loudness"),
        ({"limiter": "matchering", "true_peak_dbtp": -1}, "mastering.true_peak_dbtp"),
        ({"target_lufs": -14}, "mastering.target_lufs"),
    ],
)
def test_bad_mastering_options_are_refused_naming_the_field(
    api: ApiClient, mastering: dict[str, Any], field: str
) -> None:
    # When a job asks for an option out of range or unknown
    response = api.call(
        "POST", "/jobs", body={"target": WAV, "preset": "balanced", "mastering": mastering}
    )
    # Then it is a 400 that says which field
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_request"
    assert response.body["error"]["message"].startswith(f"{field}:")


def test_unknown_route_is_a_json_404(api: ApiClient) -> None:
    response = api.call("GET", "/nope")
    assert response.status == 404
    assert response.body["error"]["code"] == "not_found"
