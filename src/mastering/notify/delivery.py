"""The webhook sender's domain: one queued job-ended event, one delivery attempt.

The body is made at send time: the job as the table holds it now (fresh presigned
result URLs), or as the event carried it when the job is gone. A failed attempt
leaves the message on the queue, hidden until the next attempt of the Standard
Webhooks schedule (``events.retry_delay_s``); after the last one the queue's
redrive policy parks it in the dead-letter queue. A receiver that refuses the
event (a 4xx other than 408/425/429) or a destination this service will not call
ends it at once: trying again cannot help.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mastering.config import Settings
from mastering.jobs.model import Job, utc_now
from mastering.jobs.rules import ResultLinks, job_view
from mastering.jobs.store import JobStore, job_from_image
from mastering.notify.events import MAX_ATTEMPTS, JobEnded, retry_delay_s
from mastering.notify.queue import EventQueue
from mastering.notify.webhooks import Delivery, DeliveryOutcome, WebhookSender, WebhookTarget

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The event was not delivered this time; its message stays for the next attempt."""


@dataclass(frozen=True)
class SenderPorts:
    settings: Settings
    store: JobStore
    links: ResultLinks
    queue: EventQueue
    # The deployment's webhook (None: webhooks are off); may raise when its secret
    # cannot be read.
    target: Callable[[], WebhookTarget | None]
    sender_for: Callable[[WebhookTarget], WebhookSender] = field(default=WebhookSender)
    clock: Callable[[], datetime] = field(default=utc_now)


def _job_for(event: JobEnded, ports: SenderPorts) -> Job | None:
    """The job as it is now, or as it ended if it is gone (deleted) since."""
    current = ports.store.get(event.job_id)
    if current is not None and current.status is event.status:
        return current
    if event.image is None:
        return current
    try:
        return job_from_image(event.image)
    except ValueError:
        logger.exception("the event's job image is unreadable", extra={"job_id": event.job_id})
        return current


def deliver(
    event: JobEnded, *, receipt_handle: str, attempt: int, ports: SenderPorts
) -> DeliveryOutcome | None:
    """Make attempt number ``attempt`` (the message's receive count) at delivering
    ``event``. Returns how it went when nothing more is to be done; raises
    ``RetryLater`` when the message must stay for another attempt. None: webhooks
    are off, or there is no job to tell of."""
    log = {"job_id": event.job_id, "event_id": event.event_id, "attempt": attempt}
    try:
        target = ports.target()
    except Exception as error:
        logger.exception("the webhook is misconfigured", extra=log)
        raise _again(event, receipt_handle, attempt, ports, f"misconfigured: {error}") from error
    if target is None:
        logger.info("webhooks are off; event dropped", extra=log)
        return None
    job = _job_for(event, ports)
    if job is None:
        logger.error("no job to tell of; event dropped", extra=log)
        return None
    data = job_view(job, settings=ports.settings, links=ports.links, now=ports.clock())
    outcome = ports.sender_for(target).send(event.event_type, data, message_id=event.event_id)
    _note_on_job(event, attempt, outcome, ports)
    details = {**log, **outcome.to_record()}
    if outcome.state is Delivery.DELIVERED:
        logger.info("webhook delivered", extra=details)
        return outcome
    if outcome.final:
        # Nobody fixes this by waiting: say so loudly, once, and let the message go.
        logger.error("webhook %s, not retried: %s", outcome.state, outcome.detail, extra=details)
        return outcome
    why = outcome.detail or f"HTTP {outcome.status_code}"
    raise _again(event, receipt_handle, attempt, ports, why)


def _again(
    event: JobEnded, receipt_handle: str, attempt: int, ports: SenderPorts, why: str
) -> RetryLater:
    """Hide the message until its next attempt is due; the exception that says it stays."""
    webhook = ports.settings.webhook
    delay = retry_delay_s(attempt, scale=webhook.retry_scale if webhook else 1.0)
    log = {"job_id": event.job_id, "event_id": event.event_id, "attempt": attempt}
    if delay is None:
        # The queue's redrive policy moves it to the dead-letter queue at its next
        # receive; visible at once so that happens now.
        logger.error(
            "webhook failed %d times (%s); to the dead-letter queue", MAX_ATTEMPTS, why, extra=log
        )
        delay = 0
    else:
        logger.warning("webhook not delivered (%s); next attempt in %d s", why, delay, extra=log)
    try:
        ports.queue.retry_in(receipt_handle, delay)
    except Exception:
        # The message still comes back, after the queue's own visibility timeout.
        logger.exception("could not schedule the next attempt", extra=log)
    return RetryLater(why)


def _note_on_job(
    event: JobEnded, attempt: int, outcome: DeliveryOutcome, ports: SenderPorts
) -> None:
    """Keep how the webhook went on the job, for operators (not in its public view)."""
    try:
        ports.store.record_webhook(event.job_id, {**outcome.to_record(), "attempts": attempt})
    except Exception:
        # The job is gone (deleted) or the table is unreachable: only the note is lost.
        logger.info("could not note the webhook on the job", extra={"job_id": event.job_id})
