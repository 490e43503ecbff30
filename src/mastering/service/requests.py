"""Request bodies of the HTTP API, validated with pydantic."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastering.errors import InvalidRequest
from mastering.formats import DEFAULT_OUTPUTS, OutputFormat
from mastering.jobs.model import JobMode
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
# DynamoDB stores maps nested 32 deep; half of that is plenty for client bookkeeping.
MAX_METADATA_DEPTH = 16
# DynamoDB numbers: 38 significant digits, magnitudes from 1e-130 to below 1e126.
_MAX_NUMBER_DIGITS = 38
_SMALLEST_NUMBER = 1e-130
_LARGEST_NUMBER = 9.9999999999999999e125


def _child_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_storable(value: Any, path: str, depth: int) -> None:
    """Refuse what DynamoDB cannot store (and JSON cannot carry back) with the field's name.

    Iterative over containers' items but recursive per level: ``depth`` is bounded
    by MAX_METADATA_DEPTH before any recursion goes further.
    """
    if isinstance(value, dict | list):
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"{path}: nested deeper than {MAX_METADATA_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, inner in items:
            if isinstance(key, str) and not key:
                raise ValueError(f"{path}: keys must not be empty")
            _check_storable(inner, _child_path(path, key), depth + 1)
        return
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        # boto3 writes an int digit for digit (10**50 too), within DynamoDB's precision.
        if len(str(abs(value))) > _MAX_NUMBER_DIGITS:
            raise ValueError(f"{path}: numbers may have at most {_MAX_NUMBER_DIGITS} digits")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{path}: numbers must be finite")
        if value != 0.0 and not _SMALLEST_NUMBER <= abs(value) <= _LARGEST_NUMBER:
            raise ValueError(f"{path}: numbers must be 0 or between 1e-130 and 1e126 in magnitude")
        return
    raise ValueError(f"{path}: unsupported value")


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
    previews: bool = Field(
        default=False,
        strict=True,
        description="Also render 30-s MP3 previews of target and result (results.preview_*)",
    )
    mode: JobMode = Field(
        default=JobMode.MASTER,
        description=(
            "master: the outputs; preview: only the two previews (fast); "
            "analyze: nothing rendered, the inputs measured (no reference or preset needed)"
        ),
    )

    @field_validator("outputs")
    @classmethod
    def _outputs_unique_and_present(cls, outputs: list[OutputFormat]) -> list[OutputFormat]:
        if not outputs:
            raise ValueError("at least one output format is required")
        return list(dict.fromkeys(outputs))

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        _check_storable(metadata, "", 1)
        if len(json.dumps(metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return metadata

    @model_validator(mode="after")
    def _reference_xor_preset(self) -> CreateJobRequest:
        if self.mode is JobMode.ANALYZE:
            if self.preset is not None:
                raise ValueError("mode 'analyze' measures files: give no preset")
        elif (self.reference is None) == (self.preset is None):
            raise ValueError("give exactly one of 'reference' or 'preset'")
        if self.mode is not JobMode.MASTER and "outputs" in self.model_fields_set:
            raise ValueError(f"outputs: mode '{self.mode}' renders no outputs; leave them out")
        return self


# Where Powertools says a request part came from; the client knows it by field name.
_REQUEST_PARTS = frozenset({"body", "query", "header", "path"})
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type", "missing"})


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the first invalid field, e.g. ``target.size: Input should be > 0``.

    Takes pydantic's error list, as pydantic or Powertools' request validation give it.
    """
    if not errors:
        return "The request is invalid"
    first = errors[0]
    parts = [str(part) for part in first.get("loc", ())]
    if parts and parts[0] in _REQUEST_PARTS:
        parts = parts[1:]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON"
    if not parts and first.get("type") in _NOT_AN_OBJECT:
        return "The request body must be a JSON object"
    location = ".".join(parts)
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if location in ("mastering", "metadata") and ": " in message:
        # A rule across the object's fields names the field itself.
        field, message = message.split(": ", 1)
        location = f"{location}.{field}"
    return f"{location}: {message}" if location else message


def parse_create_job(body: Any) -> CreateJobRequest:
    """Validate a POST /jobs body outside the HTTP handler (tests, tools)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    try:
        return CreateJobRequest.model_validate(body)
    except ValidationError as error:
        raise InvalidRequest(describe_errors(error.errors(include_url=False))) from error
