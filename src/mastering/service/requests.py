"""Request bodies of the HTTP API, validated with pydantic."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastering.errors import InvalidRequest
from mastering.formats import DEFAULT_OUTPUTS, OutputFormat

MAX_METADATA_BYTES = 2048


class FileDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    filename: str = Field(min_length=1, max_length=255)
    size: int = Field(gt=0, description="Exact size of the file in bytes")
    content_type: str = Field(min_length=1, max_length=127)


class CreateJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: FileDeclaration
    reference: FileDeclaration | None = None
    preset: str | None = Field(default=None, min_length=1, max_length=64)
    outputs: list[OutputFormat] = Field(default_factory=lambda: list(DEFAULT_OUTPUTS))
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("outputs")
    @classmethod
    def _outputs_unique_and_present(cls, outputs: list[OutputFormat]) -> list[OutputFormat]:
        if not outputs:
            raise ValueError("at least one output format is required")
        return list(dict.fromkeys(outputs))

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return metadata

    @model_validator(mode="after")
    def _reference_xor_preset(self) -> CreateJobRequest:
        if (self.reference is None) == (self.preset is None):
            raise ValueError("give exactly one of 'reference' or 'preset'")
        return self


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def parse_create_job(body: Any) -> CreateJobRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    try:
        return CreateJobRequest.model_validate(body)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from error
