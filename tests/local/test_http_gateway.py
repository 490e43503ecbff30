"""The local HTTP API over real loopback HTTP: what a client sends reaches the function
as API Gateway would deliver it, what the gateway refuses never reaches it, and the
function's answer comes back as API Gateway would send it.

The function here is a recording fake; ``test_serve_flow`` drives the real handler.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mastering.devstack.http_gateway import (
    DEFAULT_ROUTE,
    MAX_BODY_BYTES,
    ApiGateway,
    CorsRules,
    Route,
)

ORIGIN = "https://app.spectrum.test"
ROUTES = (
    Route("POST", "/jobs"),
    Route("GET", "/jobs"),
    Route("GET", "/jobs/{job_id}"),
    Route("DELETE", "/jobs/{job_id}"),
    Route("POST", "/jobs/{job_id}/cancel"),
)
OK: dict[str, Any] = {
    "statusCode": 200,
    "headers": {"content-type": "application/json"},
    "body": '{"ok": true}',
}
# Guards against a hung server, not performance checks.
TIMEOUT_S = 10


@dataclass
class RecordingFunction:
    """Stands in for the presign function: records each event, answers ``reply``."""

    reply: Callable[[dict[str, Any]], Any] = lambda event: OK
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        return self.reply(event)

    @property
    def event(self) -> dict[str, Any]:
        assert len(self.events) == 1, self.events
        return self.events[0]


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Running:
    gateway: ApiGateway
    function: RecordingFunction

    def request(
        self,
        method: str,
        target: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=TIMEOUT_S)
        try:
            connection.request(
                method, target, body=body, headers=headers or {}, encode_chunked=chunked
            )
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are and return everything the server answers."""
        with socket.create_connection(("127.0.0.1", self.gateway.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return received


@pytest.fixture
def serve_gateway() -> Iterator[Callable[..., Running]]:
    """Start gateways on a free loopback port; every one is stopped afterwards."""
    started: list[ApiGateway] = []

    def start(
        function: RecordingFunction | None = None,
        *,
        routes: tuple[Route, ...] = ROUTES,
        cors: CorsRules | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> Running:
        function = function or RecordingFunction()
        gateway = ApiGateway(
            "127.0.0.1", 0, function, routes=routes, cors=cors, max_body_bytes=max_body_bytes
        )
        started.append(gateway)
        gateway.start()
        return Running(gateway, function)

    yield start
    for gateway in started:
        gateway.stop()


def test_a_request_reaches_the_function_as_a_payload_2_event(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a running gateway
    api = serve_gateway()
    # When a client GETs a job with a query, a cookie and its own headers
    answer = api.request(
        "GET",
        "/jobs/job%201?fields=a&fields=b",
        headers={"X-Api-Key": "k", "X-Owner-Id": "u1", "Cookie": "s=1; t=2"},
    )
    # Then the function gets the route, its parameter, the raw and decoded query,
    # lower-case headers, the cookies and the caller's address
    assert answer.status == 200
    event = api.function.event
    assert event["routeKey"] == "GET /jobs/{job_id}"
    assert event["pathParameters"] == {"job_id": "job 1"}
    assert event["rawPath"] == "/jobs/job%201"
    assert event["rawQueryString"] == "fields=a&fields=b"
    assert event["queryStringParameters"] == {"fields": "a,b"}
    assert event["headers"]["x-api-key"] == "k"
    assert event["headers"]["x-owner-id"] == "u1"
    assert event["headers"]["host"] == f"127.0.0.1:{api.gateway.port}"
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    # And the response names the same request id the function saw, as apigw-requestid
    assert answer.headers["apigw-requestid"] == event["requestContext"]["requestId"]


def test_the_functions_answer_is_the_http_response(serve_gateway: Callable[..., Running]) -> None:
    # Given a function that answers 201 with a header, two cookies and a JSON body
    def reply(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "statusCode": 201,
            "headers": {"content-type": "application/json", "location": "/jobs/j1"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": json.dumps({"job_id": "j1"}),
        }

    api = serve_gateway(RecordingFunction(reply))
    # When a client creates a job
    answer = api.request("POST", "/jobs", b"{}", {"Content-Type": "application/json"})
    # Then it gets the function's status, headers, one Set-Cookie per cookie and body
    assert answer.status == 201
    assert answer.headers["location"] == "/jobs/j1"
    assert answer.headers.get_all("set-cookie") == ["a=1; Path=/", "b=2"]
    assert answer.json() == {"job_id": "j1"}
    assert int(answer.headers["content-length"]) == len(answer.body)


@pytest.mark.parametrize(
    ("method", "target", "route_key", "params"),
    [
        ("GET", "/jobs?status=queued", "GET /jobs", None),
        ("POST", "/jobs/j1/cancel", "POST /jobs/{job_id}/cancel", {"job_id": "j1"}),
        ("DELETE", "/jobs/j1", "DELETE /jobs/{job_id}", {"job_id": "j1"}),
    ],
)
def test_every_declared_route_reaches_the_function(
    serve_gateway: Callable[..., Running],
    method: str,
    target: str,
    route_key: str,
    params: dict[str, str] | None,
) -> None:
    # Given a gateway with the API's routes
    api = serve_gateway()
    # When a client calls one of them
    answer = api.request(method, target)
    # Then the function gets it under that route, with its path parameters
    assert answer.status == 200
    assert api.function.event["routeKey"] == route_key
    assert api.function.event.get("pathParameters") == params


@pytest.mark.parametrize(("method", "target"), [("GET", "/nothing-here"), ("PUT", "/jobs")])
def test_a_request_no_route_takes_is_api_gateways_404(
    serve_gateway: Callable[..., Running], method: str, target: str
) -> None:
    # Given a gateway with explicit routes only
    api = serve_gateway()
    # When a client asks for a path or method no route has
    answer = api.request(method, target)
    # Then API Gateway's own 404 answers, and the function never runs
    assert answer.status == 404
    assert answer.json() == {"message": "Not Found"}
    assert answer.headers["content-type"] == "application/json"
    assert api.function.events == []


def test_the_default_route_passes_any_path_to_the_function(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a gateway whose API has a $default route beside an explicit one
    api = serve_gateway(routes=(DEFAULT_ROUTE, Route("GET", "/jobs/{job_id}")))
    # When clients call a path no explicit route has, and one that has a route
    api.request("PATCH", "/brand/new/route?x=1")
    api.request("GET", "/jobs/j9")
    # Then the first reaches the function as $default, with no path parameters, and
    # the explicit route still wins for its own path
    first, second = api.function.events
    assert first["routeKey"] == "$default"
    assert first["rawPath"] == "/brand/new/route"
    assert first["requestContext"]["http"]["method"] == "PATCH"
    assert "pathParameters" not in first
    assert second["routeKey"] == "GET /jobs/{job_id}"


def test_a_chunked_body_arrives_whole(serve_gateway: Callable[..., Running]) -> None:
    # Given a running gateway
    api = serve_gateway()
    document = {"target": {"filename": "song.wav", "size_bytes": 1234}, "preset": "warm"}
    text = json.dumps(document).encode()
    # When a client streams a JSON body with Transfer-Encoding: chunked
    pieces = iter([text[:7], text[7:20], text[20:]])
    answer = api.request(
        "POST", "/jobs", pieces, {"Content-Type": "application/json"}, chunked=True
    )
    # Then the function gets the whole body as text, and no chunked header
    assert answer.status == 200
    event = api.function.event
    assert json.loads(event["body"]) == document
    assert event["isBase64Encoded"] is False
    assert "transfer-encoding" not in event["headers"]


def test_a_hand_written_chunked_request_arrives_whole(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a running gateway
    api = serve_gateway()
    # When a client writes a chunked request byte by byte, in three chunks, one of
    # them empty-looking (a chunk of a single CRLF inside the data)
    answer = api.raw(
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n2\r\n\r\n\r\nA\r\n, world!!!\r\n0\r\n\r\n"
    )
    # Then the function gets the decoded body and the client the function's answer
    assert answer.startswith(b"HTTP/1.1 200")
    assert api.function.event["body"] == "hello\r\n, world!!!"


def test_a_binary_body_reaches_the_function_base64_encoded(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a running gateway
    api = serve_gateway()
    audio = bytes(range(256)) * 4
    # When a client POSTs binary content
    api.request("POST", "/jobs", audio, {"Content-Type": "application/octet-stream"})
    # Then the function gets it base64-encoded, as API Gateway sends binary bodies
    event = api.function.event
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == audio


def test_a_body_at_the_limit_is_accepted(serve_gateway: Callable[..., Running]) -> None:
    # Given a gateway with a 1 KiB body limit
    api = serve_gateway(max_body_bytes=1024)
    # When a client sends exactly that much, declared and chunked
    declared = api.request("POST", "/jobs", b"a" * 1024, {"Content-Type": "text/plain"})
    chunked = api.request(
        "POST",
        "/jobs",
        iter([b"b" * 1000, b"b" * 24]),
        {"Content-Type": "text/plain"},
        chunked=True,
    )
    # Then both reach the function whole
    assert (declared.status, chunked.status) == (200, 200)
    assert [len(event["body"]) for event in api.function.events] == [1024, 1024]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_with_413(
    serve_gateway: Callable[..., Running], chunked: bool
) -> None:
    # Given a gateway with a 1 KiB body limit and CORS for the app's origin
    api = serve_gateway(max_body_bytes=1024, cors=CorsRules((ORIGIN,)))
    # When a client sends one byte more, declared or streamed
    body: bytes | Iterator[bytes] = b"x" * 1025
    if chunked:
        body = iter([b"x" * 1000, b"x" * 25])
    answer = api.request(
        "POST", "/jobs", body, {"Content-Type": "text/plain", "Origin": ORIGIN}, chunked=chunked
    )
    # Then the gateway answers 413 in API Gateway's JSON shape, readable by the
    # browser, and the function never runs
    assert answer.status == 413
    assert answer.json() == {"message": "Request Entity Too Large"}
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert api.function.events == []


def test_the_real_limit_is_api_gateways_10_mb(serve_gateway: Callable[..., Running]) -> None:
    # Given a gateway with the default limit
    api = serve_gateway()
    # When a client declares a body over 10 MB (and sends none of it)
    answer = api.raw(
        f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
    )
    # Then it is refused at once, before the function runs
    assert answer.startswith(b"HTTP/1.1 413")
    assert answer.endswith(b'{"message": "Request Entity Too Large"}')
    assert api.function.events == []


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n0123456789",
            "Invalid Content-Length",
        ),
        (
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            "Invalid Content-Length",
        ),
        (
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n",
            "Incomplete or malformed request body",
        ),
    ],
    ids=["not-a-number", "negative", "bad-chunk-size"],
)
def test_a_malformed_body_is_refused_with_400(
    serve_gateway: Callable[..., Running], request_bytes: bytes, message: str
) -> None:
    # Given a running gateway
    api = serve_gateway()
    # When a client sends a body whose framing makes no sense
    answer = api.raw(request_bytes)
    # Then the gateway answers 400 with a JSON message, and the function never runs
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"message": message}
    assert api.function.events == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda event: 1 / 0, id="raises"),
        pytest.param(lambda event: {"statusCode": "two hundred"}, id="bad-status"),
        pytest.param(
            lambda event: {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
            id="bad-base64",
        ),
    ],
)
def test_a_failing_function_is_a_500_without_its_trace(
    serve_gateway: Callable[..., Running],
    reply: Callable[[dict[str, Any]], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a function that fails, or answers something that is not a response
    api = serve_gateway(RecordingFunction(reply))
    # When a client calls it
    answer = api.request("GET", "/jobs/j1")
    # Then the client gets API Gateway's 500 and nothing of the failure; the log has it
    assert answer.status == 500
    assert answer.json() == {"message": "Internal Server Error"}
    assert "the function failed on GET /jobs/{job_id}" in caplog.text


def test_head_gets_headers_and_no_body(serve_gateway: Callable[..., Running]) -> None:
    # Given an API with a HEAD route
    api = serve_gateway(routes=(Route("HEAD", "/jobs/{job_id}"),))
    # When a client sends HEAD
    answer = api.request("HEAD", "/jobs/j1")
    # Then it gets the status and length of the function's answer, and no body
    assert answer.status == 200
    assert answer.body == b""
    assert answer.headers["content-length"] == str(len(OK["body"]))


def test_a_preflight_is_answered_by_the_gateway(serve_gateway: Callable[..., Running]) -> None:
    # Given a gateway with CORS for the app's origin
    api = serve_gateway(cors=CorsRules((ORIGIN,)))
    # When the browser sends a preflight for DELETE from that origin
    answer = api.request(
        "OPTIONS",
        "/jobs/j1",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    # Then the gateway answers 204 from its configuration and the function never runs
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "DELETE" in answer.headers["access-control-allow-methods"].split(",")
    assert "x-api-key" in answer.headers["access-control-allow-headers"].split(",")
    assert answer.headers["access-control-max-age"] == "600"
    assert api.function.events == []


def test_a_preflight_from_another_origin_gets_no_cors_headers(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a gateway with CORS for the app's origin
    api = serve_gateway(cors=CorsRules((ORIGIN,)))
    # When another site's page sends a preflight
    answer = api.request(
        "OPTIONS",
        "/jobs",
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
    )
    # Then it gets no CORS headers, so the browser blocks the call
    assert answer.status == 204
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
    assert api.function.events == []


def test_responses_carry_the_gateways_cors_headers_not_the_functions(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a function that sets its own (too generous) CORS header
    def reply(event: dict[str, Any]) -> dict[str, Any]:
        return {**OK, "headers": {**OK["headers"], "Access-Control-Allow-Origin": "*"}}

    api = serve_gateway(RecordingFunction(reply), cors=CorsRules((ORIGIN,)))
    # When the app's origin and another origin call the API
    allowed = api.request("GET", "/jobs/j1", headers={"Origin": ORIGIN})
    other = api.request("GET", "/jobs/j1", headers={"Origin": "https://evil.test"})
    # Then only the configured origin is named, once, and the function's header is gone
    assert allowed.headers.get_all("access-control-allow-origin") == [ORIGIN]
    assert allowed.headers["vary"] == "Origin"
    assert other.headers.get_all("access-control-allow-origin") is None
    # And gateway errors are readable by the allowed origin too
    missing = api.request("GET", "/nope", headers={"Origin": ORIGIN})
    assert missing.status == 404
    assert missing.headers["access-control-allow-origin"] == ORIGIN


def test_without_cors_options_is_an_ordinary_request(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a gateway with no CORS configuration
    api = serve_gateway()
    # When a client sends OPTIONS to a path with no OPTIONS route
    answer = api.request("OPTIONS", "/jobs", headers={"Origin": ORIGIN})
    # Then no preflight is answered: it is a 404 like any unrouted request
    assert answer.status == 404
    assert "access-control-allow-origin" not in answer.headers


def test_requests_are_served_concurrently(serve_gateway: Callable[..., Running]) -> None:
    # Given a function whose first call waits until a second call has arrived
    second_arrived = threading.Event()

    def reply(event: dict[str, Any]) -> Any:
        if event["pathParameters"]["job_id"] == "first":
            assert second_arrived.wait(TIMEOUT_S), "the second request never arrived"
        else:
            second_arrived.set()
        return OK

    api = serve_gateway(RecordingFunction(reply))
    # When two clients call at once
    results: dict[str, int] = {}
    first = threading.Thread(
        target=lambda: results.update(first=api.request("GET", "/jobs/first").status)
    )
    first.start()
    results["second"] = api.request("GET", "/jobs/second").status
    first.join(TIMEOUT_S)
    # Then both are answered: the second did not wait for the first
    assert results == {"first": 200, "second": 200}


def test_stop_releases_the_port(serve_gateway: Callable[..., Running]) -> None:
    # Given a running gateway that has served a request
    api = serve_gateway()
    assert api.request("GET", "/jobs/j1").status == 200
    port = api.gateway.port
    # When it stops (twice, as a stack's cleanup may)
    api.gateway.stop()
    api.gateway.stop()
    # Then nothing answers on its port, and the port can be listened on again
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_a_taken_port_raises_address_in_use() -> None:
    # Given something already listening on a port
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        busy = squatter.getsockname()[1]
        # When a gateway is made for it
        with pytest.raises(OSError, match="in use") as failure:
            ApiGateway("127.0.0.1", busy, RecordingFunction(), routes=ROUTES)
    # Then the constructor raises EADDRINUSE for the stack to report, rather than
    # werkzeug printing and exiting
    assert failure.value.errno == errno.EADDRINUSE
