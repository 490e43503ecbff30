"""boto3 clients, created lazily and cached per process.

Created on first use, never at import, so moto and the local stack can intercept
them; boto3 itself honours ``AWS_ENDPOINT_URL``. ``reset_clients`` drops the cache
(tests switch endpoints between cases).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any, Literal, cast

import boto3
from botocore.config import Config


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _s3_config() -> Config:
    # Presigned URLs must name the bucket's own regional endpoint with SigV4:
    # the global endpoint answers new buckets with a 307 that breaks browser CORS
    # preflights. An emulator on 127.0.0.1 only understands path-style addressing.
    emulated = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    style = os.environ.get("S3_ADDRESSING_STYLE") or ("path" if emulated else "virtual")
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": cast(Literal["auto", "virtual", "path"], style)},
        retries={"mode": "standard", "max_attempts": 5},
    )


@cache
def s3_client() -> Any:
    return boto3.client("s3", region_name=_region(), config=_s3_config())


@cache
def s3_presign_client() -> Any:
    """The client whose URLs browsers use.

    Locally the emulator may be reachable from the browser under another address
    than from the functions (``PUBLIC_S3_ENDPOINT_URL``); in AWS both are S3.
    """
    public = os.environ.get("PUBLIC_S3_ENDPOINT_URL")
    if not public:
        return s3_client()
    return boto3.client("s3", region_name=_region(), config=_s3_config(), endpoint_url=public)


@cache
def dynamodb_resource() -> Any:
    return boto3.resource(
        "dynamodb",
        region_name=_region(),
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


def reset_clients() -> None:
    s3_client.cache_clear()
    s3_presign_client.cache_clear()
    dynamodb_resource.cache_clear()
