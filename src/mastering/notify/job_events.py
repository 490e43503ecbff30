"""The port through which the worker says "this job ended", and its webhook adapter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mastering.config import Settings
from mastering.jobs.model import Job, utc_now
from mastering.jobs.rules import job_view
from mastering.jobs.store import JobStore
from mastering.notify.webhooks import WebhookSender, event_type_for, webhook_target
from mastering.storage.objects import ObjectStorage

logger = logging.getLogger(__name__)


class JobNotifier(Protocol):
    def job_ended(self, job: Job, *, budget_s: float) -> None: ...


class NoNotifier:
    def job_ended(self, job: Job, *, budget_s: float) -> None:
        return None


@dataclass
class WebhookNotifier:
    sender: WebhookSender
    settings: Settings
    storage: ObjectStorage
    store: JobStore
    clock: Callable[[], datetime] = field(default=utc_now)

    def job_ended(self, job: Job, *, budget_s: float) -> None:
        event_type = event_type_for(str(job.status))
        if event_type is None:
            return
        # A webhook is news about a job, never part of its outcome: nothing here may
        # raise into the caller and turn a succeeded job into a failed one.
        try:
            data = job_view(job, settings=self.settings, links=self.storage, now=self.clock())
            outcome = self.sender.send(
                event_type,
                data,
                message_id=f"msg_{job.job_id}_{job.status}",
                budget_s=budget_s,
            )
            self.store.record_webhook(job.job_id, outcome.to_record())
            logger.info(
                "webhook %s", outcome.state, extra={"job_id": job.job_id, **outcome.to_record()}
            )
        except Exception:
            logger.exception("webhook delivery crashed", extra={"job_id": job.job_id})


def notifier_for(settings: Settings, storage: ObjectStorage, store: JobStore) -> JobNotifier:
    target = webhook_target(settings)
    if target is None:
        return NoNotifier()
    return WebhookNotifier(WebhookSender(target), settings, storage, store)
