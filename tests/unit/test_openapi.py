"""The OpenAPI document: generated from the models that validate, served, and kept in docs/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import ApiClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import openapi as openapi_tool  # noqa: E402

ROUTES = {
    ("/jobs", "post"),
    ("/jobs", "get"),
    ("/jobs/{job_id}", "get"),
    ("/jobs/{job_id}", "delete"),
    ("/jobs/{job_id}/cancel", "post"),
    ("/presets", "get"),
    ("/health", "get"),
    ("/openapi.json", "get"),
}


def test_the_committed_document_is_current() -> None:
    # Given the document generated from the code now
    generated = openapi_tool.render(openapi_tool.generate())
    # Then docs/openapi.json is exactly that (else: make openapi)
    assert (ROOT / "docs" / "openapi.json").read_text() == generated


def test_the_document_describes_every_route_with_its_errors() -> None:
    document = openapi_tool.generate()
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    # Then every DESIGN.md route is there, and nothing else
    assert operations == ROUTES
    # And each protected route needs the key, and declares the error body it can send
    for path, item in document["paths"].items():
        for method, operation in item.items():
            open_route = path in ("/health", "/openapi.json")
            assert operation.get("security", None) == ([] if open_route else None), path
            assert "422" not in operation["responses"], (path, method)
            error = operation["responses"]["500"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert document["security"] == [{"ApiKey": []}]
    create = document["paths"]["/jobs"]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "413", "415", "429"}
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][body.rsplit("/", 1)[-1]]
    assert {"target", "reference", "preset", "outputs", "metadata", "mastering"} <= set(
        schema["properties"]
    )


def test_the_api_serves_the_same_document_without_a_key(api: ApiClient) -> None:
    # When a client fetches GET /openapi.json with no key
    response = api.call("GET", "/openapi.json", api_key=None, owner=None)
    # Then it is the committed document
    assert response.status == 200
    assert response.body == json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert response.body["openapi"].startswith("3.1")
