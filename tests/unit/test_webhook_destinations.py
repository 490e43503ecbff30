"""Where a webhook may go: only public addresses, on the ports the deployment allows.

A webhook URL is configuration, but a URL pointing the sender at the network it runs
in (the instance metadata service, a private service, a NAT64 gateway into one) would
turn the sender into a way in. Each refusal below is checked before any connection.
"""

from __future__ import annotations

import base64

import pytest

from mastering.config import load_settings
from mastering.errors import InternalError
from mastering.notify.webhooks import WebhookRefused, WebhookTarget, resolve_destination

SECRET = "whsec_" + base64.b64encode(b"spectrum-test-webhook-secret-32b").decode()
PUBLIC = "93.184.216.34"


def _resolve(url: str, addresses: list[str], **target: object) -> object:
    return resolve_destination(
        WebhookTarget(url, SECRET, **target),  # type: ignore[arg-type]
        resolver=lambda host, port: addresses,
    )


@pytest.mark.parametrize(
    ("url", "addresses", "allow_loopback"),
    [
        ("https://hooks.example.com/x", ["10.0.0.5"], False),
        ("https://hooks.example.com/x", ["192.168.1.10"], False),
        ("https://hooks.example.com/x", ["172.16.0.1"], False),
        ("https://metadata.example.com/x", ["169.254.169.254"], False),
        ("https://metadata.example.com/x", ["fd00:ec2::254"], False),
        ("https://hooks.example.com/x", ["100.64.0.1"], False),
        ("https://hooks.example.com/x", [PUBLIC, "10.0.0.5"], False),  # any bad one
        ("https://hooks.example.com/x", ["::ffff:10.0.0.5"], False),
        ("https://localhost/x", ["127.0.0.1"], False),  # loopback unless the local stack
        ("http://hooks.example.com/x", [PUBLIC], False),  # plain http in AWS
        ("http://hooks.example.com/x", [PUBLIC], True),  # and even locally
        ("http://127.0.0.1/x", ["127.0.0.1", "10.0.0.1"], True),
        ("ftp://hooks.example.com/x", [PUBLIC], False),
        ("https://user:pw@hooks.example.com/x", [PUBLIC], False),
    ],
)
def test_non_public_or_insecure_destinations_are_refused_before_connecting(
    url: str, addresses: list[str], allow_loopback: bool
) -> None:
    # Given a webhook URL whose host resolves to these addresses
    # When the sender checks where it would connect
    # Then it refuses
    with pytest.raises(WebhookRefused):
        _resolve(url, addresses, allow_loopback=allow_loopback)


@pytest.mark.parametrize(
    "address",
    [
        # NAT64 (RFC 6052): 64:ff9b::a00:5 reaches 10.0.0.5 through a NAT64 gateway,
        # 64:ff9b::a9fe:a9fe the metadata service; Python calls both "global".
        "64:ff9b::a00:5",
        "64:ff9b::a9fe:a9fe",
        # Local-use NAT64 prefix (RFC 8215).
        "64:ff9b:1::a00:5",
        # 6to4 (RFC 3056): 2002:a00:5:: is 10.0.0.5 behind a 6to4 relay.
        "2002:a00:5::1",
        "2002:a9fe:a9fe::1",
        # IPv4-compatible (deprecated): ::a.b.c.d.
        "::a00:5",
        "::a9fe:a9fe",
        # IPv4-translated (RFC 2765): ::ffff:0:a.b.c.d.
        "::ffff:0:a00:5",
        # Teredo (RFC 4380), whose client address is hidden in the last 32 bits.
        "2001:0:4136:e378:8000:63bf:f5ff:fffa",
    ],
)
def test_ipv6_forms_that_carry_an_ipv4_address_are_refused(address: str) -> None:
    # Given a host that resolves to an IPv6 address standing for an IPv4 host
    # When the sender checks it
    # Then it refuses, whatever IPv4 address is inside
    with pytest.raises(WebhookRefused, match="non-public"):
        _resolve("https://hooks.example.com/in", [address])


def test_the_same_forms_around_a_public_ipv4_address_are_refused_too() -> None:
    # A receiver is never published under one of these: refused outright, not decoded.
    for address in ("64:ff9b::5db8:d822", "2002:5db8:d822::1", "::5db8:d822"):
        with pytest.raises(WebhookRefused):
            _resolve("https://hooks.example.com/in", [address])


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com:8443/in", "https://hooks.example.com:22/"]
)
def test_a_port_other_than_443_is_refused_by_default(url: str) -> None:
    # Given a public host, but a port the deployment did not allow
    # When the sender checks the URL
    # Then it refuses, and says which setting allows more
    with pytest.raises(WebhookRefused, match="WEBHOOK_ALLOWED_PORTS"):
        _resolve(url, [PUBLIC])


def test_a_port_the_deployment_allows_is_used() -> None:
    # Given a deployment that allows 8443 besides 443
    allowed = frozenset({443, 8443})
    # When the URL names 8443
    destination = _resolve("https://hooks.example.com:8443/in", [PUBLIC], allowed_ports=allowed)
    # Then that is where it connects
    assert (destination.address, destination.port) == (PUBLIC, 8443)  # type: ignore[attr-defined]


def test_public_https_and_local_loopback_on_its_allowed_port_are_allowed() -> None:
    public = _resolve("https://hooks.example.com/in?x=1", [PUBLIC])
    assert (public.address, public.port, public.path) == (PUBLIC, 443, "/in?x=1")  # type: ignore[attr-defined]
    local = _resolve(
        "http://127.0.0.1:8000/hook",
        ["127.0.0.1"],
        allow_loopback=True,
        allowed_ports=frozenset({443, 8000}),
    )
    assert (local.address, local.port) == ("127.0.0.1", 8000)  # type: ignore[attr-defined]


def test_loopback_still_needs_its_port_allowed() -> None:
    with pytest.raises(WebhookRefused, match="port 8000"):
        _resolve("http://127.0.0.1:8000/hook", ["127.0.0.1"], allow_loopback=True)


def test_the_allowed_ports_are_a_setting() -> None:
    env = {
        "JOBS_TABLE": "t",
        "UPLOADS_BUCKET": "u",
        "RESULTS_BUCKET": "r",
        "WEBHOOK_URL": "https://hooks.example.com:8443/in",
    }
    # Given no setting: only 443
    settings = load_settings(env)
    assert settings.webhook is not None
    assert settings.webhook.allowed_ports == {443}
    # Given WEBHOOK_ALLOWED_PORTS: those
    settings = load_settings({**env, "WEBHOOK_ALLOWED_PORTS": "443, 8443"})
    assert settings.webhook is not None
    assert settings.webhook.allowed_ports == {443, 8443}
    # Given nonsense: the function refuses to start, naming the variable
    for bad in ("https", "0", "443,70000"):
        with pytest.raises(InternalError, match="WEBHOOK_ALLOWED_PORTS"):
            load_settings({**env, "WEBHOOK_ALLOWED_PORTS": bad})
