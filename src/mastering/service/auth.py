"""API key check for the HTTP API."""

from __future__ import annotations

import hmac

from mastering.config import Settings
from mastering.errors import InternalError, Unauthorized

# Powertools' parameter cache: one SSM read per warm container every few minutes,
# so a rotated key is picked up without a redeploy.
_KEY_CACHE_SECONDS = 300


def expected_api_key(settings: Settings) -> str:
    """The key callers must send: given directly locally, an SSM SecureString in AWS."""
    if settings.api_key:
        return settings.api_key
    parameter = settings.api_key_parameter
    if not parameter:
        raise InternalError("service misconfigured: no API key is set")
    # Imported here: only deployed functions need the SSM provider.
    from aws_lambda_powertools.utilities.parameters import get_parameter

    value = get_parameter(parameter, decrypt=True, max_age=_KEY_CACHE_SECONDS)
    if not isinstance(value, str) or not value:
        raise InternalError("service misconfigured: the API key parameter is empty")
    return value


def check_api_key(presented: str | None, expected: str) -> None:
    # compare_digest on bytes: constant time whatever the inputs' lengths or content.
    if presented is None or not hmac.compare_digest(
        presented.encode("utf-8"), expected.encode("utf-8")
    ):
        raise Unauthorized("A valid X-Api-Key header is required")
