"""The job store: the only module that talks to DynamoDB.

Every state change is a conditional write on the current status, so duplicate S3
events, retries and concurrent uploads cannot run a job twice or move a finished
job back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from mastering import clients
from mastering.config import AwsSettings
from mastering.formats import InputRole, ResultName
from mastering.jobs.model import (
    LIVE_STATUSES,
    Job,
    JobStatus,
    ResultObject,
    Stage,
    can_transition,
    iso,
    owner_key,
    to_dynamo,
)
from mastering.jobs.rules import ttl_for
from mastering.options import MasteringOptions

STATUS_DEADLINE_INDEX = "status-deadline-index"
OWNER_INDEX = "owner-created-index"
# A listing filtered by status reads at most this many index pages per request, so an
# owner with a long history and a rare status cannot make one request read it all;
# the caller gets fewer jobs and a cursor to go on.
_MAX_PAGES_PER_LISTING = 10


@dataclass(frozen=True)
class ListPosition:
    """Where a listing of one owner's jobs stopped (the newest-first order's last job)."""

    job_id: str
    created_at: str


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    # None when the listing is complete.
    next_position: ListPosition | None


class JobAlreadyExists(Exception):
    """A job with this id exists (ids are random UUIDs: a bug, or a replayed create)."""


class JobStore(Protocol):
    """Jobs by id, every change conditional on the job's current state.

    Writes stamp ``updated_at`` with ``now`` and keep the record for the retention
    period after it (DynamoDB TTL), so callers only say when a change happens.
    """

    def create(self, job: Job) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def record_upload(self, job_id: str, role: InputRole, *, now: datetime) -> Job | None: ...

    def transition(
        self,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        now: datetime,
        stage: Stage,
        percent: int,
        deadline_at: int | None = None,
        error: dict[str, str] | None = None,
        results: dict[ResultName, ResultObject] | None = None,
        metrics: dict[str, float | None] | None = None,
        attempt_id: str | None = None,
        mastering: MasteringOptions | None = None,
        warnings: tuple[dict[str, str], ...] | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Job | None: ...

    def set_progress(
        self, job_id: str, *, attempt_id: str, stage: Stage, percent: int, now: datetime
    ) -> bool: ...

    def overdue(self, status: JobStatus, *, now_epoch: int, limit: int) -> list[str]: ...

    def list_for_owner(
        self,
        owner: str,
        *,
        limit: int,
        status: JobStatus | None = None,
        after: ListPosition | None = None,
    ) -> JobPage:
        """The owner's jobs, newest first, ``limit`` at most, continuing ``after``."""
        ...

    def count_live(self, owner: str, *, created_since: datetime) -> int:
        """How many of the owner's jobs created since then are not yet terminal."""
        ...

    def delete(self, job_id: str) -> None: ...

    def record_webhook(self, job_id: str, outcome: dict[str, Any]) -> None: ...


def job_from_image(image: dict[str, Any]) -> Job:
    """A job from a stream record's image (DynamoDB's JSON: ``{"status": {"S": ...}}``).

    Raises ``ValueError`` when the image is not a job's."""
    deserializer = TypeDeserializer()
    try:
        return Job.from_item(
            {name: deserializer.deserialize(value) for name, value in image.items()}
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"not a job's image: {error!r}") from error


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoJobStore:
    def __init__(self, table_name: str, *, aws: AwsSettings, retention_days: int) -> None:
        self._table_name = table_name
        self._aws = aws
        self._retention_days = retention_days

    @property
    def _table(self) -> Any:
        return clients.dynamodb_resource(self._aws).Table(self._table_name)

    def _ttl(self, moment: datetime) -> int:
        return ttl_for(self._retention_days, moment)

    def create(self, job: Job) -> None:
        ttl = ttl_for(self._retention_days, datetime.fromisoformat(job.updated_at))
        try:
            self._table.put_item(
                Item=job.to_item(ttl), ConditionExpression="attribute_not_exists(job_id)"
            )
        except ClientError as error:
            if _condition_failed(error):
                raise JobAlreadyExists(job.job_id) from error
            raise

    def get(self, job_id: str) -> Job | None:
        item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return Job.from_item(item) if item else None

    def record_upload(self, job_id: str, role: InputRole, *, now: datetime) -> Job | None:
        """Add ``role`` to the uploaded set while the job waits for uploads.

        Returns the job as it is after this write (the write is atomic, so of two
        uploads landing at once exactly one sees both roles), or None when the job
        is unknown or past waiting.
        """
        try:
            response = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="ADD uploaded :role SET updated_at = :now, #ttl = :ttl",
                ConditionExpression="attribute_exists(job_id) AND #status = :waiting",
                ExpressionAttributeNames={"#status": "status", "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":role": {str(role)},
                    ":now": iso(now),
                    ":ttl": self._ttl(now),
                    ":waiting": str(JobStatus.AWAITING_UPLOAD),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _condition_failed(error):
                return None
            raise
        return Job.from_item(response["Attributes"])

    def transition(
        self,
        job_id: str,
        expected: JobStatus,
        new: JobStatus,
        *,
        now: datetime,
        stage: Stage,
        percent: int,
        deadline_at: int | None = None,
        error: dict[str, str] | None = None,
        results: dict[ResultName, ResultObject] | None = None,
        metrics: dict[str, float | None] | None = None,
        attempt_id: str | None = None,
        mastering: MasteringOptions | None = None,
        warnings: tuple[dict[str, str], ...] | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Job | None:
        """Move the job from ``expected`` to ``new``; None if it was not in ``expected``."""
        if not can_transition(expected, new):
            raise ValueError(f"no transition from {expected} to {new}")
        assignments = {
            "#status": str(new),
            "updated_at": iso(now),
            "#ttl": self._ttl(now),
            "stage": str(stage),
            "percent": percent,
        }
        if deadline_at is not None:
            assignments["deadline_at"] = deadline_at
        if error is not None:
            assignments["error"] = error
        if results is not None:
            assignments["results"] = {str(fmt): obj.to_item() for fmt, obj in results.items()}
        if metrics is not None:
            assignments["metrics"] = to_dynamo(metrics)
        if attempt_id is not None:
            assignments["attempt_id"] = attempt_id
        if mastering is not None:
            assignments["mastering"] = to_dynamo(mastering.to_public())
        if warnings is not None:
            assignments["warnings"] = [dict(warning) for warning in warnings]
        if analysis is not None:
            assignments["analysis"] = to_dynamo(analysis)
        names = {"#status": "status", "#ttl": "ttl"}
        values: dict[str, Any] = {":expected": str(expected)}
        parts = []
        for index, (name, value) in enumerate(assignments.items()):
            placeholder = f":v{index}"
            if not name.startswith("#"):
                names[f"#a{index}"] = name
                name = f"#a{index}"
            parts.append(f"{name} = {placeholder}")
            values[placeholder] = value
        try:
            response = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET " + ", ".join(parts),
                ConditionExpression="attribute_exists(job_id) AND #status = :expected",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return Job.from_item(response["Attributes"])

    def set_progress(
        self, job_id: str, *, attempt_id: str, stage: Stage, percent: int, now: datetime
    ) -> bool:
        try:
            self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET stage = :stage, #percent = :percent, updated_at = :now",
                ConditionExpression="#status = :processing AND attempt_id = :attempt",
                ExpressionAttributeNames={"#status": "status", "#percent": "percent"},
                ExpressionAttributeValues={
                    ":stage": str(stage),
                    ":percent": percent,
                    ":now": iso(now),
                    ":processing": str(JobStatus.PROCESSING),
                    ":attempt": attempt_id,
                },
            )
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise
        return True

    def overdue(self, status: JobStatus, *, now_epoch: int, limit: int) -> list[str]:
        response = self._table.query(
            IndexName=STATUS_DEADLINE_INDEX,
            KeyConditionExpression=Key("status").eq(str(status))
            & Key("deadline_at").lte(now_epoch),
            Limit=limit,
        )
        return [str(item["job_id"]) for item in response.get("Items", [])]

    def list_for_owner(
        self,
        owner: str,
        *,
        limit: int,
        status: JobStatus | None = None,
        after: ListPosition | None = None,
    ) -> JobPage:
        query: dict[str, Any] = {
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": Key("owner_key").eq(owner_key(owner)),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if status is not None:
            # Limit counts items read before the filter: read bigger pages, and several
            # of them, until enough match.
            query["FilterExpression"] = Attr("status").eq(str(status))
            query["Limit"] = max(limit, 100)
        if after is not None:
            query["ExclusiveStartKey"] = {
                "job_id": after.job_id,
                "owner_key": owner_key(owner),
                "created_at": after.created_at,
            }
        jobs: list[Job] = []
        for _ in range(_MAX_PAGES_PER_LISTING):
            response = self._table.query(**query)
            for item in response.get("Items", []):
                jobs.append(Job.from_item(item))
                if len(jobs) == limit:
                    last = jobs[-1]
                    more = "LastEvaluatedKey" in response or item is not response["Items"][-1]
                    position = ListPosition(last.job_id, last.created_at) if more else None
                    return JobPage(jobs, position)
            last_key = response.get("LastEvaluatedKey")
            if last_key is None:
                return JobPage(jobs, None)
            query["ExclusiveStartKey"] = last_key
        return JobPage(jobs, ListPosition(str(last_key["job_id"]), str(last_key["created_at"])))

    def count_live(self, owner: str, *, created_since: datetime) -> int:
        query: dict[str, Any] = {
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": Key("owner_key").eq(owner_key(owner))
            & Key("created_at").gte(iso(created_since)),
            "FilterExpression": Attr("status").is_in([str(s) for s in LIVE_STATUSES]),
            "Select": "COUNT",
        }
        count = 0
        while True:
            response = self._table.query(**query)
            count += int(response.get("Count", 0))
            if "LastEvaluatedKey" not in response:
                return count
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def delete(self, job_id: str) -> None:
        self._table.delete_item(Key={"job_id": job_id})

    def record_webhook(self, job_id: str, outcome: dict[str, Any]) -> None:
        self._table.update_item(
            Key={"job_id": job_id},
            UpdateExpression="SET webhook = :outcome",
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeValues={":outcome": outcome},
        )
