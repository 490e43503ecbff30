"""Job-ended events: which change of a job is one, what it is called, how it travels
through the webhook queue, and when a failed delivery is tried again.

A job's terminal write is the event: the jobs table's stream carries it to the
job-events function (``notify.relay``), which puts one message per ended job on the
webhook queue; the webhook sender (``notify.delivery``) delivers it from there. No
function that ends a job waits on a receiver, and an event outlives the function
that caused it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mastering.jobs.model import TERMINAL_STATUSES, JobStatus

EVENT_TYPES: dict[JobStatus, str] = {status: f"job.{status}" for status in TERMINAL_STATUSES}

# The Standard Webhooks retry schedule: attempt 1 at once, then each further attempt
# this many seconds after the one before failed (5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h; about 28 hours in all). Index n holds the wait after attempt n failed.
RETRY_SCHEDULE_S: tuple[int, ...] = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
MAX_ATTEMPTS = len(RETRY_SCHEDULE_S) + 1
# SQS keeps a message hidden for at most 12 hours per receive.
_MAX_VISIBILITY_S = 12 * 3600

_TERMINAL_NAMES = sorted(str(status) for status in TERMINAL_STATUSES)
# The stream records the job-events function is invoked for (Lambda event filtering;
# template.yaml's FilterCriteria holds the same pattern, and a test checks they agree):
# a job modified from a live status into a terminal one. The function checks the
# same again (``job_ended_event``): the filter only saves invocations.
STREAM_FILTER_PATTERN: dict[str, Any] = {
    "eventName": ["MODIFY"],
    "dynamodb": {
        "NewImage": {"status": {"S": _TERMINAL_NAMES}},
        "OldImage": {"status": {"S": [{"anything-but": _TERMINAL_NAMES}]}},
    },
}


def event_id(job_id: str, status: JobStatus) -> str:
    """The ``webhook-id`` of a job's ending: the same for every copy of the event, so a
    receiver drops repeats however many times the stream or the queue delivers it."""
    return f"msg_{job_id}_{status}"


class NotAnEvent(ValueError):
    """A queue message that is not a job-ended event."""


@dataclass(frozen=True)
class JobEnded:
    job_id: str
    status: JobStatus
    # The job as the terminal write left it, in DynamoDB's JSON: what the webhook says
    # if the job is gone (deleted) by the time it is sent. None if it was too big.
    image: dict[str, Any] | None = None

    @property
    def event_id(self) -> str:
        return event_id(self.job_id, self.status)

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.status]

    def to_message(self) -> str:
        return json.dumps(
            {
                "id": self.event_id,
                "type": self.event_type,
                "job_id": self.job_id,
                "status": str(self.status),
                "image": self.image,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_message(cls, body: str) -> JobEnded:
        try:
            message = json.loads(body)
            status = JobStatus(message["status"])
            job_id = str(message["job_id"])
        except (ValueError, TypeError, KeyError) as error:
            raise NotAnEvent(f"not a job-ended event: {error}") from error
        if status not in EVENT_TYPES:
            raise NotAnEvent(f"not a job-ended event: status {status} is not terminal")
        image = message.get("image")
        return cls(job_id, status, image if isinstance(image, dict) else None)


def retry_delay_s(failed_attempt: int, *, scale: float = 1.0) -> int | None:
    """Seconds until the attempt after ``failed_attempt`` (1-based); None when that
    was the last one.

    ``scale`` shortens the schedule for tests and the local stack; SQS counts
    visibility in whole seconds, so any delay left is at least 1 s (and 0 only for
    ``scale`` 0).
    """
    failed_attempt = max(1, failed_attempt)
    if failed_attempt > len(RETRY_SCHEDULE_S):
        return None
    delay = RETRY_SCHEDULE_S[failed_attempt - 1] * scale
    if scale == 0:
        return 0
    return min(_MAX_VISIBILITY_S, max(1, round(delay)))
