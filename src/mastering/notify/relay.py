"""The job-events function's domain: a jobs-table stream record in, for a job that
just ended, one event on the webhook queue and its uploads deleted.

Lambda delivers stream records at least once, so the same ending may come here
twice; it then makes two messages with one event id, and the receiver drops the
second by its ``webhook-id``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from mastering.config import Settings
from mastering.jobs.model import JobStatus
from mastering.jobs.store import job_from_image
from mastering.notify.events import EVENT_TYPES, JobEnded
from mastering.notify.queue import EventQueue
from mastering.storage.keys import upload_key
from mastering.storage.objects import ObjectStorage

logger = logging.getLogger(__name__)

# SQS takes messages of up to 256 KiB; a job bigger than that travels without its
# image (the sender reads the job from the table instead).
MAX_MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class RelayPorts:
    settings: Settings
    queue: EventQueue
    storage: ObjectStorage


def _string(image: Any, name: str) -> str | None:
    """A string attribute of an image in DynamoDB's JSON (``{name: {"S": value}}``)."""
    attribute = image.get(name) if isinstance(image, dict) else None
    value = attribute.get("S") if isinstance(attribute, dict) else None
    return value if isinstance(value, str) and value else None


def _status(image: Any) -> JobStatus | None:
    raw = _string(image, "status")
    try:
        return JobStatus(raw) if raw is not None else None
    except ValueError:
        return None


def job_ended_event(record: dict[str, Any]) -> JobEnded | None:
    """The event a stream record stands for: a job that moved from a live status into
    a terminal one. None for every other change (progress, the sender's own notes on
    a job that had ended already, creation, deletion by the API or by TTL)."""
    if record.get("eventName") != "MODIFY":
        return None
    change = record.get("dynamodb") or {}
    new_image = change.get("NewImage")
    old, new = _status(change.get("OldImage")), _status(new_image)
    if old is None or new is None or old in EVENT_TYPES or new not in EVENT_TYPES:
        return None
    job_id = _string(new_image, "job_id")
    if job_id is None:
        return None
    return JobEnded(job_id=job_id, status=new, image=new_image)


def relay(record: dict[str, Any], *, ports: RelayPorts) -> JobEnded | None:
    """Queue the webhook event of a job that just ended and delete its uploads.

    Raises when the event could not be queued: the record is then retried (Lambda's
    stream retries), which is why queueing comes first and nothing after it raises.
    """
    event = job_ended_event(record)
    if event is None:
        return None
    if len(event.to_message().encode()) > MAX_MESSAGE_BYTES:
        logger.warning("job too big to travel with its event", extra={"job_id": event.job_id})
        event = dataclasses.replace(event, image=None)
    ports.queue.send(event)
    logger.info(
        "job ended; event queued", extra={"job_id": event.job_id, "event_id": event.event_id}
    )
    _delete_uploads(event, record, ports)
    return event


def _delete_uploads(event: JobEnded, record: dict[str, Any], ports: RelayPorts) -> None:
    """Inputs are only needed until the job has run. Best effort: the uploads bucket's
    lifecycle rule removes whatever is left after a day."""
    try:
        job = job_from_image(record["dynamodb"]["NewImage"])
        keys = [upload_key(job.job_id, role) for role in job.inputs]
        ports.storage.delete(ports.settings.uploads_bucket, keys)
    except Exception:
        logger.exception("could not delete the job's uploads", extra={"job_id": event.job_id})
    else:
        logger.info("uploads deleted", extra={"job_id": event.job_id, "keys": keys})
