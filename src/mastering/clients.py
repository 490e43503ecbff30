"""boto3 clients, created lazily and cached per process and configuration.

Created on first use, never at import, so moto and the local stack can intercept
them; boto3 itself honours ``AWS_ENDPOINT_URL``. ``reset_clients`` drops the cache
(tests switch endpoints between cases). Only the data-access modules
(``jobs.store``, ``storage.objects``) and the local stack's resource setup use them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from mastering.config import AwsSettings


def _session_arguments(aws: AwsSettings) -> dict[str, Any]:
    arguments: dict[str, Any] = {"region_name": aws.region}
    if aws.endpoint_url:
        arguments["endpoint_url"] = aws.endpoint_url
    if aws.static_credentials is not None:
        key_id, secret = aws.static_credentials
        arguments["aws_access_key_id"] = key_id
        arguments["aws_secret_access_key"] = secret
    return arguments


def _s3_config(aws: AwsSettings) -> Config:
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": aws.s3_addressing_style},
        retries={"mode": "standard", "max_attempts": 5},
    )


@cache
def s3_client(aws: AwsSettings) -> Any:
    return boto3.client("s3", config=_s3_config(aws), **_session_arguments(aws))


@cache
def s3_presign_client(aws: AwsSettings) -> Any:
    """The client whose URLs browsers use (the emulator's public address, locally)."""
    if aws.public_s3_endpoint_url is None:
        return s3_client(aws)
    arguments = {**_session_arguments(aws), "endpoint_url": aws.public_s3_endpoint_url}
    return boto3.client("s3", config=_s3_config(aws), **arguments)


@cache
def sqs_client(aws: AwsSettings) -> Any:
    return boto3.client("sqs", **_session_arguments(aws))


@cache
def dynamodb_streams_client(aws: AwsSettings) -> Any:
    """Only the local stack reads the jobs stream itself; in AWS, Lambda does."""
    return boto3.client("dynamodbstreams", **_session_arguments(aws))


@cache
def dynamodb_resource(aws: AwsSettings) -> Any:
    return boto3.resource(
        "dynamodb",
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
        **_session_arguments(aws),
    )


def reset_clients() -> None:
    s3_client.cache_clear()
    s3_presign_client.cache_clear()
    sqs_client.cache_clear()
    dynamodb_streams_client.cache_clear()
    dynamodb_resource.cache_clear()
