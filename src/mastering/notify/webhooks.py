"""One signed webhook delivery attempt (Standard Webhooks).

Signing is the ``standardwebhooks`` package's. What is written here is what no
maintained library does for us: refusing destinations that would let a webhook
reach into the network it runs in (private, loopback, link-local and metadata
addresses, IPv6 forms that carry an IPv4 address, ports the deployment did not
allow), and pinning the connection to the address that was checked (so a DNS
answer cannot change between check and connect).

Retrying is not done here: one call is one attempt, and the caller (the webhook
sender, fed from a queue) decides when the next one is due.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import urllib3
from standardwebhooks import Webhook

from mastering.config import DEFAULT_WEBHOOK_PORTS, Settings

logger = logging.getLogger(__name__)

# A receiver that answers one of these may well take the event later; any other 4xx
# says the event itself is refused, and sending it again cannot help.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})
ATTEMPT_TIMEOUT_S = 10.0

# IPv6 forms whose address stands for an IPv4 host, or a tunnel to one, that
# ``ipaddress.is_global`` judges by the IPv6 prefix alone (NAT64's 64:ff9b::/96 is
# "global" whatever private address it embeds). A webhook receiver is never
# published under one of these, so they are refused outright rather than decoded.
_TRANSLATED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "64:ff9b::/96",  # NAT64, well-known prefix (RFC 6052)
        "64:ff9b:1::/48",  # NAT64, local-use prefix (RFC 8215)
        "2002::/16",  # 6to4 (RFC 3056)
        "2001::/32",  # Teredo (RFC 4380)
        "::/96",  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
    )
)


class WebhookRefused(Exception):
    """The destination is not one this service will call."""


class WebhookMisconfigured(Exception):
    """A webhook is configured, but not completely."""


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str
    # Only the local stack sets this: plain http to 127.0.0.0/8 or ::1.
    allow_loopback: bool = False
    allowed_ports: frozenset[int] = DEFAULT_WEBHOOK_PORTS


class Delivery(StrEnum):
    DELIVERED = "delivered"
    # Worth another attempt later: 5xx, 408/425/429, a redirect, a network error.
    RETRY = "retry"
    # The receiver refused the event itself (another 4xx): final.
    REJECTED = "rejected"
    # This service will not call the destination (SSRF rules): final.
    REFUSED = "refused"


@dataclass(frozen=True)
class DeliveryOutcome:
    state: Delivery
    status_code: int | None = None
    detail: str = ""

    @property
    def final(self) -> bool:
        return self.state is not Delivery.RETRY

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"state": str(self.state)}
        if self.status_code is not None:
            record["status_code"] = self.status_code
        if self.detail:
            record["detail"] = self.detail[:200]
        return record


def webhook_target(settings: Settings) -> WebhookTarget | None:
    """The deployment's webhook, or None when none is configured.

    Raises when a webhook URL is configured but its secret cannot be had: that is
    worth retrying (the parameter may be created, SSM may answer again), never a
    reason to drop the event.
    """
    configured = settings.webhook
    if configured is None:
        return None
    secret = configured.secret or ""
    if not secret and configured.secret_parameter:
        from aws_lambda_powertools.utilities.parameters import get_parameter

        secret = str(get_parameter(configured.secret_parameter, decrypt=True, max_age=300) or "")
    if not secret:
        raise WebhookMisconfigured("WEBHOOK_URL is set but no webhook secret is configured")
    return WebhookTarget(
        url=configured.url,
        secret=secret,
        allow_loopback=configured.allow_loopback,
        allowed_ports=configured.allowed_ports,
    )


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.is_loopback:
            return allow_loopback
        elif any(ip in network for network in _TRANSLATED_V6):
            return False
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
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise WebhookRefused("the webhook URL has an invalid port") from error
    if port not in target.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(target.allowed_ports))
        raise WebhookRefused(
            f"the webhook URL's port {port} is not allowed (allowed: {allowed}; "
            "see WEBHOOK_ALLOWED_PORTS)"
        )
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


Post = Callable[[ResolvedDestination, bytes, dict[str, str], float], int]


def _post_pinned(
    destination: ResolvedDestination, body: bytes, headers: dict[str, str], timeout_s: float
) -> int:
    """POST to the checked address, with the real host name for Host, SNI and the cert."""
    timeout = urllib3.Timeout(total=timeout_s)
    pool: urllib3.HTTPConnectionPool
    if destination.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            destination.address,
            destination.port,
            server_hostname=destination.host,
            assert_hostname=destination.host,
            cert_reqs="CERT_REQUIRED",
            timeout=timeout,
            retries=False,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            destination.address, destination.port, timeout=timeout, retries=False
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


def _judge(status: int) -> Delivery:
    if 200 <= status < 300:
        return Delivery.DELIVERED
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
        return Delivery.REJECTED
    return Delivery.RETRY


@dataclass
class WebhookSender:
    target: WebhookTarget
    post: Post = field(default=_post_pinned)
    resolver: Callable[[str, int], list[str]] | None = None
    timeout_s: float = ATTEMPT_TIMEOUT_S

    def send(self, event_type: str, data: dict[str, Any], *, message_id: str) -> DeliveryOutcome:
        """One attempt to deliver an event, signed now.

        Every attempt of one event carries the same ``message_id`` (``webhook-id``),
        so receivers can drop repeats.
        """
        try:
            destination = resolve_destination(self.target, self.resolver)
        except WebhookRefused as refusal:
            return DeliveryOutcome(Delivery.REFUSED, detail=str(refusal))
        payload = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "spectrum-mastering-webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(self.target.secret).sign(message_id, now, payload),
        }
        try:
            status = self.post(destination, payload.encode("utf-8"), headers, self.timeout_s)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return DeliveryOutcome(Delivery.RETRY, detail=type(error).__name__)
        state = _judge(status)
        detail = "receiver refused it" if state is Delivery.REJECTED else ""
        return DeliveryOutcome(state, status, detail)
