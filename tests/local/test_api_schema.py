"""Schemathesis against the local stack: requests generated from GET /openapi.json, over
real HTTP, checked against the same document (no 5xx, no status, content type or body
outside what it declares, and invalid input refused)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.local.serve_process import API_KEY, Serve, running_serve

# Bounded: every operation gets this many generated requests per test run.
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("schema"), "--workers", "1") as running:
        yield running


# The committed document: tests/unit/test_openapi.py proves it is what the stack serves
# (schemathesis' lazy from_fixture loader does not run under pytest 9).
schema = schemathesis.openapi.from_path(Path(__file__).resolve().parents[2] / "docs/openapi.json")
# Requests the document allows, and requests it forbids (which must get a 4xx).
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_one_the_document_declares(case: schemathesis.Case, serve: Serve) -> None:
    # Given any request the document allows (or one it forbids)
    # When it is sent to the local stack with the API key
    case.call_and_validate(
        base_url=serve.api,
        headers={"X-Api-Key": API_KEY},
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
            checks.negative_data_rejection,
        ],
    )
    # Then it is answered without a 5xx, as the document says
