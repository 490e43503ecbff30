"""Request bodies of the HTTP API, validated with pydantic."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastering.errors import InvalidRequest
from mastering.formats import DEFAULT_OUTPUTS, OutputFormat
from mastering.options import (
    MAX_LOUDNESS_LUFS,
    MAX_TRUE_PEAK_DBTP,
    MIN_LOUDNESS_LUFS,
    MIN_TRUE_PEAK_DBTP,
    PLATFORM_LOUDNESS,
    Limiter,
    RequestedOptions,
    loudness_choice,
)

MAX_METADATA_BYTES = 2048


class FileDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    filename: str = Field(min_length=1, max_length=255)
    size: int = Field(gt=0, description="Exact size of the file in bytes")
    content_type: str = Field(min_length=1, max_length=127)


class MasteringOptionsBody(BaseModel):
    """The optional ``mastering`` object of POST /jobs (DESIGN.md "Mastering options")."""

    model_config = ConfigDict(extra="forbid")

    loudness: str | float | None = Field(
        default=None,
        description=(
            '"reference", a LUFS number '
            f"({MIN_LOUDNESS_LUFS:g} to {MAX_LOUDNESS_LUFS:g}) or a platform id: "
            + ", ".join(PLATFORM_LOUDNESS)
        ),
    )
    true_peak_dbtp: float | None = Field(
        default=None,
        ge=MIN_TRUE_PEAK_DBTP,
        le=MAX_TRUE_PEAK_DBTP,
        allow_inf_nan=False,
        description="Ceiling of every output file, as decoded (BS.1770 true peak)",
    )
    intensity: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of the matched EQ applied: 0 keeps the target's balance",
    )
    limiter: Limiter | None = None

    @field_validator("loudness", mode="before")
    @classmethod
    def _loudness_known(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("must be a number or a name")
        try:
            return loudness_choice(value)
        except InvalidRequest as error:
            raise ValueError(error.message.removeprefix("mastering.loudness: ")) from None

    @model_validator(mode="after")
    def _matchering_sets_its_own_level(self) -> MasteringOptionsBody:
        if self.limiter is Limiter.MATCHERING:
            for name in ("loudness", "true_peak_dbtp"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: the matchering limiter sets its own loudness and "
                        "ceiling; leave it out or use limiter 'true_peak'"
                    )
        return self

    def requested(self) -> RequestedOptions:
        return RequestedOptions(
            loudness=self.loudness,
            true_peak_dbtp=self.true_peak_dbtp,
            intensity=self.intensity,
            limiter=self.limiter,
        )


class CreateJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: FileDeclaration
    reference: FileDeclaration | None = None
    preset: str | None = Field(default=None, min_length=1, max_length=64)
    outputs: list[OutputFormat] = Field(default_factory=lambda: list(DEFAULT_OUTPUTS))
    metadata: dict[str, Any] = Field(default_factory=dict)
    mastering: MasteringOptionsBody = Field(default_factory=MasteringOptionsBody)

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
    if location == "mastering" and ": " in message:
        # A rule across the object's fields names the field itself.
        field, message = message.split(": ", 1)
        location = f"mastering.{field}"
    return f"{location}: {message}" if location else message


def parse_create_job(body: Any) -> CreateJobRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    try:
        return CreateJobRequest.model_validate(body)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from error
