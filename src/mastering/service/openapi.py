"""The OpenAPI 3.1 document of the HTTP API (GET /openapi.json, docs/openapi.json).

Powertools generates it from the routes and the pydantic models that validate
requests and answers; this module adds what only the service knows (title,
version, the API-key scheme) and removes what the service never sends: Powertools
lists a 422 validation answer on every route, while this API answers 400
``invalid_request`` (declared on each route with the error body).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

from mastering import SERVICE_NAME, __version__

API_KEY_SCHEME = "ApiKey"
OPEN_PATHS = frozenset({"/health", "/openapi.json"})
_ERROR_BODY_REF = "#/components/schemas/ErrorBody"
_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")
_DESCRIPTION = (
    "Spectrum's mastering backend: create a job, upload the files with the presigned "
    "POST forms, then poll the job or receive its webhook. Every route but /health and "
    "/openapi.json needs the X-Api-Key header; X-Owner-Id names the end user the caller "
    "acts for (whoever holds the key is trusted to name it)."
)


def openapi_document(app: ApiGatewayResolver) -> dict[str, Any]:
    generated = app.get_openapi_json_schema(
        title="Spectrum mastering API",
        version=__version__,
        description=_DESCRIPTION,
        security_schemes={
            # "in" is a Python keyword: the model takes it by its alias.
            API_KEY_SCHEME: APIKey.model_validate(
                {"name": "X-Api-Key", "in": APIKeyIn.header, "description": "The API key"}
            )
        },
        security=[{API_KEY_SCHEME: []}],
    )
    document: dict[str, Any] = json.loads(generated)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            # Any route may fail on our side, always with the error body.
            responses["500"] = {
                "description": "Something went wrong on our side (internal_error)",
                "content": {"application/json": {"schema": {"$ref": _ERROR_BODY_REF}}},
            }
            if path in OPEN_PATHS:
                operation["security"] = []
    schemas = document.get("components", {}).get("schemas", {})
    for name in _UNUSED_SCHEMAS:
        schemas.pop(name, None)
    document["info"]["x-service"] = SERVICE_NAME
    return document
