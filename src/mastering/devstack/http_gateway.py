"""A local stand-in for API Gateway's HTTP API: real HTTP in, payload 2.0 events out.

Like ``sam local start-api``: each request that matches a route becomes an API
Gateway HTTP API v2 event for the handler, and the handler's response becomes the
HTTP response. What API Gateway does before the function ever runs is done here
too: unknown routes answer 404 ``{"message": "Not Found"}``, CORS preflights are
answered from the API's CORS configuration (template.yaml ``HttpApi.
CorsConfiguration``, mirrored by ``CorsRules``), and CORS response headers come
from that configuration, not from the function.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mastering.devstack.handlers import ACCOUNT_ID

logger = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any]], Any]

# API Gateway refuses larger request payloads before invoking anything.
MAX_BODY_BYTES = 10 * 1024 * 1024
_API_ID = "local"

_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|[\w.+-]+\+json|xml|[\w.+-]+\+xml|javascript|"
    r"x-www-form-urlencoded|graphql))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Route:
    """One route of the API: ``GET /jobs/{job_id}`` matches one path segment per parameter."""

    method: str
    path: str

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        want = self.path.strip("/").split("/")
        have = path.strip("/").split("/")
        if len(want) != len(have) or path.endswith("/") != self.path.endswith("/"):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(want, have, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = unquote(segment)
            elif pattern != segment:
                return None
        return params


# The presign function's routes (template.yaml PresignFunction.Events).
API_ROUTES: tuple[Route, ...] = (
    Route("POST", "/jobs"),
    Route("GET", "/jobs/{job_id}"),
    Route("GET", "/presets"),
    Route("GET", "/health"),
)


@dataclass(frozen=True)
class CorsRules:
    """The HTTP API's CORS configuration; defaults are template.yaml's."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...] = ("content-type", "x-api-key", "x-owner-id")
    allow_methods: tuple[str, ...] = ("GET", "POST", "OPTIONS")
    max_age_s: int = 600

    def allowed_origin(self, origin: str | None) -> str | None:
        if not origin:
            return None
        if "*" in self.allow_origins:
            return "*"
        wanted = origin.rstrip("/").lower()
        for allowed in self.allow_origins:
            if allowed.rstrip("/").lower() == wanted:
                return origin
        return None


@dataclass
class HttpReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_reply(status: int, body: dict[str, Any]) -> HttpReply:
    return HttpReply(
        status, [("content-type", "application/json")], json.dumps(body).encode("utf-8")
    )


def build_event(
    *,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    route: Route,
    path_parameters: dict[str, str],
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends the function for this request."""
    split = urlsplit(target)
    raw_path = split.path or "/"
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            # Format 2.0 moves cookies out of the headers into their own list.
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    host = merged.get("host", "localhost")
    domain = host.split(":", 1)[0] if not host.startswith("[") else host
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": split.query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": _API_ID,
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if split.query:
        query: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        text = _as_text(body, merged.get("content-type", ""))
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def _as_text(body: bytes, content_type: str) -> str | None:
    """The body as text when API Gateway would pass it as text, else None (base64)."""
    if not _TEXT_TYPES.match(content_type):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def reply_from_result(result: Any) -> HttpReply:
    """Turn the function's return value into the HTTP response, as format 2.0 does.

    A dict with ``statusCode`` is a full response; anything else is JSON for a 200.
    """
    if not isinstance(result, dict) or "statusCode" not in result:
        return HttpReply(
            200,
            [("content-type", "application/json")],
            (result if isinstance(result, str) else json.dumps(result)).encode("utf-8"),
        )
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("set-cookie", str(cookie)) for cookie in result.get("cookies") or [])
    raw_body = result.get("body")
    body = b""
    if raw_body is not None:
        text = raw_body if isinstance(raw_body, str) else json.dumps(raw_body)
        body = base64.b64decode(text) if result.get("isBase64Encoded") else text.encode("utf-8")
    return HttpReply(int(result["statusCode"]), headers, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gateway: ApiGateway


class _RequestHandler(BaseHTTPRequestHandler):
    # Keep-alive, as API Gateway offers; every reply carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        started = time.monotonic()
        try:
            reply = self.server.gateway.respond(
                method=self.command,
                target=self.path,
                headers=list(self.headers.items()),
                read_body=self._read_body,
                source_ip=self.client_address[0],
            )
        except _BodyTooLarge:
            reply = _json_reply(413, {"message": "Request Entity Too Large"})
            self.close_connection = True
        except _BadRequest as error:
            reply = _json_reply(400, {"message": str(error)})
            self.close_connection = True
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(reply.body)))
        self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        logger.info(
            '%s "%s %s" %d %dms',
            self.client_address[0],
            self.command,
            self.path,
            reply.status,
            (time.monotonic() - started) * 1000,
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("content-length")
        if not raw_length:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BadRequest("Invalid Content-Length") from None
        if length < 0:
            raise _BadRequest("Invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadRequest("Invalid chunked encoding") from None
            if size == 0:
                # Trailers, up to the blank line that ends the message.
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def log_message(self, format: str, *args: Any) -> None:
        # Routed to logging (one access line is written per request in _handle).
        logger.debug(format, *args)


class _BodyTooLarge(Exception):
    pass


class _BadRequest(Exception):
    pass


class ApiGateway:
    """An HTTP server on ``host:port`` that invokes ``invoke(event)`` per matched route.

    The socket is bound on construction, so a taken port fails here, before anything
    else starts. ``invoke`` may be called from several threads at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        invoke: Invoke,
        *,
        routes: Sequence[Route] = API_ROUTES,
        cors: CorsRules | None = None,
    ) -> None:
        self._invoke = invoke
        self._routes = tuple(routes)
        self._cors = cors
        self._server = _Server((host, port), _RequestHandler)
        self._server.gateway = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="api-gateway",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def respond(
        self,
        *,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        read_body: Callable[[], bytes],
        source_ip: str,
    ) -> HttpReply:
        origin = next((v for k, v in headers if k.lower() == "origin"), None)
        # Read even when unused, so the connection stays usable for the next request.
        body = read_body()
        if method == "OPTIONS" and self._cors is not None:
            return self._preflight(origin)
        path = urlsplit(target).path or "/"
        for route in self._routes:
            params = route.match(method, path)
            if params is not None:
                event = build_event(
                    method=method,
                    target=target,
                    headers=headers,
                    body=body,
                    source_ip=source_ip,
                    route=route,
                    path_parameters=params,
                )
                reply = self._call(event)
                break
        else:
            reply = _json_reply(404, {"message": "Not Found"})
        return self._with_cors(reply, origin)

    def _call(self, event: dict[str, Any]) -> HttpReply:
        try:
            return reply_from_result(self._invoke(event))
        except Exception:
            # What API Gateway answers when the integration fails; the trace is the
            # function's log, not the client's business.
            logger.exception("the function failed on %s", event["routeKey"])
            return _json_reply(500, {"message": "Internal Server Error"})

    def _preflight(self, origin: str | None) -> HttpReply:
        assert self._cors is not None
        headers: list[tuple[str, str]] = []
        allowed = self._cors.allowed_origin(origin)
        if allowed is not None:
            headers = [
                ("access-control-allow-origin", allowed),
                ("access-control-allow-methods", ",".join(self._cors.allow_methods)),
                ("access-control-allow-headers", ",".join(self._cors.allow_headers)),
                ("access-control-max-age", str(self._cors.max_age_s)),
            ]
        return HttpReply(204, headers, b"")

    def _with_cors(self, reply: HttpReply, origin: str | None) -> HttpReply:
        if self._cors is None:
            return reply
        # With CORS configured, API Gateway replaces whatever CORS headers the
        # function returned with its own.
        headers = [
            (name, value)
            for name, value in reply.headers
            if not name.lower().startswith("access-control-")
        ]
        allowed = self._cors.allowed_origin(origin)
        if allowed is not None:
            headers.append(("access-control-allow-origin", allowed))
            headers.append(("vary", "Origin"))
        return HttpReply(reply.status, headers, reply.body)
