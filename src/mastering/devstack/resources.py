"""Create, in an emulator (moto), the buckets, table and queues that template.yaml
defines.

Kept in step with template.yaml by tests/infra (key schema, indexes, TTL attribute,
stream, the queues' settings and redrive policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mastering import clients
from mastering.config import AwsSettings, Settings
from mastering.jobs.store import OWNER_INDEX, STATUS_DEADLINE_INDEX
from mastering.notify.events import MAX_ATTEMPTS
from mastering.storage.keys import UPLOADS_PREFIX

# template.yaml: WebhookQueue, WebhookDeadLetterQueue, JobEventsDeadLetterQueue.
WEBHOOK_QUEUE_VISIBILITY_S = 540
WEBHOOK_QUEUE_RETENTION_S = 4 * 24 * 3600
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600
STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"


def _create_bucket(client: Any, name: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})


def create_jobs_table(table_name: str, aws: AwsSettings) -> None:
    client = clients.dynamodb_resource(aws).meta.client
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "deadline_at", "AttributeType": "N"},
            {"AttributeName": "owner_key", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "S"},
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
            },
            {
                "IndexName": OWNER_INDEX,
                "KeySchema": [
                    {"AttributeName": "owner_key", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
    )


def _put_cors(client: Any, bucket: str, origins: tuple[str, ...], methods: list[str]) -> None:
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": list(origins),
                    "AllowedMethods": methods,
                    "AllowedHeaders": ["*"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )


def create_resources(settings: Settings) -> None:
    s3 = clients.s3_client(settings.aws)
    region = s3.meta.region_name
    _create_bucket(s3, settings.uploads_bucket, region)
    _create_bucket(s3, settings.results_bucket, region)
    if settings.allowed_origins:
        # Browsers POST uploads with the presigned form and fetch results by URL.
        _put_cors(s3, settings.uploads_bucket, settings.allowed_origins, ["POST"])
        _put_cors(s3, settings.results_bucket, settings.allowed_origins, ["GET", "HEAD"])
    create_jobs_table(settings.jobs_table, settings.aws)


def create_upload_notifications(
    settings: Settings, queue_name: str, *, visibility_timeout_s: int
) -> str:
    """Route the uploads bucket's ObjectCreated events under ``uploads/`` into a queue.

    The local stand-in for template.yaml's S3 -> master function trigger: the
    emulator delivers S3 notifications to SQS (not to a local process), and the
    local stack's worker turns each message back into the S3 event. Returns the
    queue URL. ``visibility_timeout_s`` is the queue's default; a consumer that
    takes a message for long work should lengthen it for that message.
    """
    s3 = clients.s3_client(settings.aws)
    sqs = clients.sqs_client(settings.aws)
    queue_url = str(
        sqs.create_queue(
            QueueName=queue_name,
            Attributes={"VisibilityTimeout": str(min(visibility_timeout_s, 43_200))},
        )["QueueUrl"]
    )
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.uploads_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    # The id S3 puts in each record's configurationId (see events/).
                    "Id": "MasterFunctionUploads",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": UPLOADS_PREFIX}]}
                    },
                }
            ]
        },
    )
    return queue_url


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str


@dataclass(frozen=True)
class WebhookQueues:
    events: Queue
    dead_letters: Queue
    # Where stream batches the job-events function could not relay are reported.
    relay_failures: Queue


def _create_queue(sqs: Any, name: str, attributes: dict[str, str]) -> Queue:
    url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return Queue(url=url, arn=str(arn))


def create_webhook_queues(
    aws: AwsSettings, *, events: str, dead_letters: str, relay_failures: str
) -> WebhookQueues:
    """The webhook queue, its dead-letter queue (after ``MAX_ATTEMPTS`` receives) and
    the job-events function's failure queue, named as given."""
    sqs = clients.sqs_client(aws)
    retention = {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_S)}
    parked = _create_queue(sqs, dead_letters, retention)
    queue = _create_queue(
        sqs,
        events,
        {
            "VisibilityTimeout": str(WEBHOOK_QUEUE_VISIBILITY_S),
            "MessageRetentionPeriod": str(WEBHOOK_QUEUE_RETENTION_S),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": parked.arn, "maxReceiveCount": MAX_ATTEMPTS}
            ),
        },
    )
    return WebhookQueues(queue, parked, _create_queue(sqs, relay_failures, retention))


def jobs_stream_arn(settings: Settings) -> str:
    """The jobs table's stream (created with the table)."""
    client = clients.dynamodb_resource(settings.aws).meta.client
    return str(client.describe_table(TableName=settings.jobs_table)["Table"]["LatestStreamArn"])
