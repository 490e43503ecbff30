"""Create, in an emulator (moto), the buckets and table that template.yaml defines.

Kept in step with template.yaml by tests/infra (key schema, index, TTL attribute).
"""

from __future__ import annotations

from typing import Any

from mastering.config import Settings
from mastering.jobs.store import STATUS_DEADLINE_INDEX
from mastering.storage import aws


def _create_bucket(client: Any, name: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})


def create_jobs_table(table_name: str) -> None:
    client = aws.dynamodb_resource().meta.client
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "deadline_at", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": STATUS_DEADLINE_INDEX,
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "deadline_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
    )


def create_resources(settings: Settings) -> None:
    s3 = aws.s3_client()
    region = s3.meta.region_name
    _create_bucket(s3, settings.uploads_bucket, region)
    _create_bucket(s3, settings.results_bucket, region)
    if settings.allowed_origins:
        s3.put_bucket_cors(
            Bucket=settings.uploads_bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": list(settings.allowed_origins),
                        "AllowedMethods": ["POST"],
                        "AllowedHeaders": ["*"],
                        "MaxAgeSeconds": 3000,
                    }
                ]
            },
        )
    create_jobs_table(settings.jobs_table)
