"""Signed webhooks when a job ends (Standard Webhooks).

Signing is the ``standardwebhooks`` package's. What is written here is what no
maintained library does for us: refusing destinations that would let a webhook
reach into the network it runs in (private, loopback, link-local and metadata
addresses), pinning the connection to the address that was checked (so a DNS
answer cannot change between check and connect), and retrying within the time the
function has left.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from standardwebhooks import Webhook

from mastering.config import Settings

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_ATTEMPT_TIMEOUT_S = 10.0
_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 30.0
_MAX_ATTEMPTS = 8


class WebhookRefused(Exception):
    """The destination is not one this service will call."""


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str
    # Only the local stack sets this: plain http to 127.0.0.0/8 or ::1.
    allow_loopback: bool = False


@dataclass(frozen=True)
class DeliveryOutcome:
    state: str  # delivered | failed | refused
    attempts: int
    status_code: int | None = None
    detail: str = ""

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"state": self.state, "attempts": self.attempts}
        if self.status_code is not None:
            record["status_code"] = self.status_code
        if self.detail:
            record["detail"] = self.detail[:200]
        return record


def webhook_target(settings: Settings) -> WebhookTarget | None:
    """The deployment's webhook, or None when none is configured."""
    configured = settings.webhook
    if configured is None:
        return None
    secret = configured.secret or ""
    if not secret and configured.secret_parameter:
        from aws_lambda_powertools.utilities.parameters import get_parameter

        secret = str(get_parameter(configured.secret_parameter, decrypt=True, max_age=300) or "")
    if not secret:
        logger.error("WEBHOOK_URL is set but no webhook secret is configured")
        return None
    return WebhookTarget(
        url=configured.url, secret=secret, allow_loopback=configured.allow_loopback
    )


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    # is_global excludes private, link-local (so 169.254.169.254 and fd00:ec2::254),
    # shared (100.64/10), reserved, multicast and unspecified ranges.
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class ResolvedDestination:
    scheme: str
    host: str
    port: int
    address: str
    path: str


def resolve_destination(
    target: WebhookTarget,
    resolver: Callable[[str, int], list[str]] | None = None,
) -> ResolvedDestination:
    """Check the URL and every address its host resolves to; pick one to connect to."""
    parts = urlsplit(target.url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookRefused("the webhook URL must be an absolute https URL")
    if parts.username or parts.password:
        raise WebhookRefused("the webhook URL must not carry credentials")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = (resolver or _resolve)(host, port)
    if not addresses:
        raise WebhookRefused(f"the webhook host {host} does not resolve")
    for address in addresses:
        if not _address_allowed(address, target.allow_loopback):
            raise WebhookRefused(f"the webhook host {host} resolves to a non-public address")
    all_loopback = all(ipaddress.ip_address(a).is_loopback for a in addresses)
    if parts.scheme != "https" and not (target.allow_loopback and all_loopback):
        raise WebhookRefused("the webhook URL must use https")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return ResolvedDestination(parts.scheme, host, port, addresses[0], path)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _post_pinned(destination: ResolvedDestination, body: bytes, headers: dict[str, str]) -> int:
    """POST to the checked address, with the real host name for Host, SNI and the cert."""
    pool: urllib3.HTTPConnectionPool
    if destination.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            destination.address,
            destination.port,
            server_hostname=destination.host,
            assert_hostname=destination.host,
            cert_reqs="CERT_REQUIRED",
            timeout=_ATTEMPT_TIMEOUT_S,
            retries=False,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            destination.address, destination.port, timeout=_ATTEMPT_TIMEOUT_S, retries=False
        )
    default_port = 443 if destination.scheme == "https" else 80
    host_header = (
        destination.host
        if destination.port == default_port
        else f"{destination.host}:{destination.port}"
    )
    try:
        response = pool.urlopen(
            "POST",
            destination.path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            preload_content=True,
        )
        return int(response.status)
    finally:
        pool.close()


@dataclass
class WebhookSender:
    target: WebhookTarget
    post: Callable[[ResolvedDestination, bytes, dict[str, str]], int] = field(default=_post_pinned)
    sleep: Callable[[float], None] = field(default=time.sleep)
    resolver: Callable[[str, int], list[str]] | None = None

    def send(
        self, event_type: str, data: dict[str, Any], *, message_id: str, budget_s: float
    ) -> DeliveryOutcome:
        """Deliver one event, retrying on 5xx/429/network errors while ``budget_s`` lasts.

        The same ``message_id`` is used on every attempt so receivers can drop repeats.
        """
        try:
            destination = resolve_destination(self.target, self.resolver)
        except WebhookRefused as refusal:
            logger.warning("webhook refused: %s", refusal)
            return DeliveryOutcome("refused", 0, detail=str(refusal))
        payload = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
        signer = Webhook(self.target.secret)
        deadline = time.monotonic() + budget_s
        backoff = _FIRST_BACKOFF_S
        attempts = 0
        status: int | None = None
        detail = ""
        while attempts < _MAX_ATTEMPTS:
            attempts += 1
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "user-agent": "spectrum-mastering-webhooks/1",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, payload),
            }
            try:
                status = self.post(destination, payload.encode("utf-8"), headers)
                detail = ""
            except (urllib3.exceptions.HTTPError, OSError) as error:
                status, detail = None, type(error).__name__
            if status is not None and 200 <= status < 300:
                return DeliveryOutcome("delivered", attempts, status)
            if status is not None and status not in RETRYABLE_STATUSES:
                return DeliveryOutcome("failed", attempts, status, "receiver refused it")
            if time.monotonic() + backoff >= deadline:
                break
            self.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
        return DeliveryOutcome("failed", attempts, status, detail or "retries exhausted")


def event_type_for(status: str) -> str | None:
    return {"succeeded": "job.succeeded", "failed": "job.failed"}.get(status)
