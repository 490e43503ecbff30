"""A local stand-in for API Gateway's HTTP API: real HTTP in, payload 2.0 events out.

Like ``sam local start-api``: each request that matches a route becomes an API
Gateway HTTP API v2 event for the handler, and the handler's response becomes the
HTTP response. What API Gateway does before the function ever runs is done here
too: requests no route takes answer 404 ``{"message": "Not Found"}``, bodies over
10 MB 413, CORS preflights are answered from the API's CORS configuration
(template.yaml ``HttpApi.CorsConfiguration``, mirrored by ``CorsRules``), and CORS
response headers come from that configuration, not from the function.

The routes are the ones template.yaml gives the presign function (its ``HttpApi``
events), read when the gateway starts: a route added to the template works here
with no change to this module, and one missing from it fails here as it would in
AWS. Without a template (an installed package) every request takes the
``$default`` route and the handler's own router answers.

The same server also hands out the web page (the checkout's ``web/`` folder, plain
static files): ``GET /`` is its ``index.html`` and ``GET /<file>`` any file in it. In
AWS the page lives on a static host of its own, so the API always wins: a request a
declared route takes goes to the function even if a file of that name exists, and
only what would have gone to ``$default`` (or to the gateway's 404) can be a file.

HTTP itself (request parsing, chunked bodies, ``Expect: 100-continue``) is
werkzeug's: a threaded ``werkzeug.serving`` server runs the WSGI app below.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.security import safe_join
from werkzeug.serving import WSGIRequestHandler, make_server, select_address_family
from werkzeug.wrappers import Request, Response

from mastering.devstack.handlers import ACCOUNT_ID, HandlersNotFound, functions_dir

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any]], Any]

# API Gateway refuses larger request payloads before invoking anything.
MAX_BODY_BYTES = 10 * 1024 * 1024
_API_ID = "local"
# template.yaml's logical id of the function behind the HTTP API.
API_FUNCTION = "PresignFunction"
DEFAULT_ROUTE_KEY = "$default"

# Bodies API Gateway passes as text; anything else (or text that is not UTF-8) is
# base64 with isBase64Encoded.
_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|[\w.+-]+\+json|xml|[\w.+-]+\+xml|javascript|"
    r"x-www-form-urlencoded|graphql))",
    re.IGNORECASE,
)

_DECIMAL = re.compile(r"[0-9]+")

# Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, not the message: the
# function does not see the client's, and the server sets its own on the response.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade")
)

# Where the request handler leaves the header lines as received, before WSGI joins
# repeated ones and drops names with "_": payload 2.0 splits each Cookie line itself.
_RAW_HEADERS_KEY = "mastering.raw_headers"


@dataclass(frozen=True)
class Route:
    """One route of the API, as API Gateway matches it.

    ``GET /jobs/{job_id}`` takes one non-empty path segment per parameter,
    ``/files/{proxy+}`` (greedy, last only) the rest of the path, method ``ANY``
    every method; ``Route("ANY", "$default")`` takes whatever no other route does.
    """

    method: str
    path: str

    @property
    def is_default(self) -> bool:
        return self.path == DEFAULT_ROUTE_KEY

    @property
    def route_key(self) -> str:
        return DEFAULT_ROUTE_KEY if self.is_default else f"{self.method} {self.path}"

    @property
    def priority(self) -> tuple[bool, bool, int, bool]:
        """Sort key, most specific first, as API Gateway picks among matching routes:
        exact paths, then path parameters, then greedy ones, then ``$default``; a
        named method before ``ANY``."""
        segments = self.path.split("/")
        greedy = bool(segments) and segments[-1].endswith("+}")
        params = sum(1 for part in segments if part.startswith("{"))
        return (self.is_default, greedy, params, self.method == "ANY")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when this route takes the request, else None."""
        if self.is_default:
            return {}
        if self.method not in ("ANY", method):
            return None
        want = self.path.split("/")
        have = path.split("/")
        params: dict[str, str] = {}
        for index, pattern in enumerate(want):
            if pattern.startswith("{") and pattern.endswith("+}"):
                rest = "/".join(have[index:])
                if not rest:
                    return None
                params[pattern[1:-2]] = unquote(rest)
                return params
            if index >= len(have):
                return None
            segment = have[index]
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = unquote(segment)
            elif pattern != segment:
                return None
        return params if len(have) == len(want) else None


DEFAULT_ROUTE = Route("ANY", DEFAULT_ROUTE_KEY)


class TemplateRoutesError(ValueError):
    """template.yaml does not say which routes the function has."""


# A loader that reads CloudFormation's short tags (!Ref, !Sub...) as plain YAML values:
# routes never use them, and resolving them would need the deployed stack. A SafeLoader
# of its own, so that yaml.safe_load elsewhere does not learn these tags.
_TemplateLoader: Any = type("_TemplateLoader", (yaml.SafeLoader,), {})


def _plain_value(loader: Any, suffix: str, node: Any) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_TemplateLoader.add_multi_constructor("!", _plain_value)


def routes_from_template(template: Path, function: str = API_FUNCTION) -> tuple[Route, ...]:
    """The HTTP API routes ``template`` gives ``function``: its ``HttpApi`` events.

    An event with neither ``Path`` nor ``Method``, or with ``Path: $default``, is the
    ``$default`` route; no ``Method`` (or ``x-amazon-apigateway-any-method``) is ``ANY``.
    """
    with template.open(encoding="utf-8") as source:
        document: Any = yaml.load(source, Loader=_TemplateLoader)  # noqa: S506 (safe loader)
    resources = document.get("Resources") if isinstance(document, dict) else None
    resource = resources.get(function) if isinstance(resources, dict) else None
    if not isinstance(resource, dict):
        raise TemplateRoutesError(f"{template}: no resource {function}")
    events = (resource.get("Properties") or {}).get("Events") or {}
    routes: list[Route] = []
    for name, event in events.items():
        if not isinstance(event, dict) or event.get("Type") != "HttpApi":
            continue
        properties = event.get("Properties") or {}
        path, method = properties.get("Path"), properties.get("Method")
        if (path is None and method is None) or path == DEFAULT_ROUTE_KEY:
            routes.append(DEFAULT_ROUTE)
            continue
        if not isinstance(path, str) or not path.startswith("/"):
            raise TemplateRoutesError(f"{template}: {function} event {name} has no /Path")
        if method is None or str(method).lower() in ("any", "x-amazon-apigateway-any-method"):
            routes.append(Route("ANY", path))
        else:
            routes.append(Route(str(method).upper(), path))
    if not routes:
        raise TemplateRoutesError(f"{template}: {function} has no HttpApi events")
    return tuple(routes)


def declared_routes() -> tuple[Route, ...]:
    """The routes of the checkout's template.yaml, or ``$default`` without one."""
    try:
        template = functions_dir().parent / "template.yaml"
    except HandlersNotFound:
        return (DEFAULT_ROUTE,)
    if not template.is_file():
        logger.debug("no %s: every request goes to the function ($default)", template)
        return (DEFAULT_ROUTE,)
    try:
        return routes_from_template(template)
    except (OSError, yaml.YAMLError, TemplateRoutesError) as error:
        logger.warning("routes from %s unreadable (%s); using $default", template, error)
        return (DEFAULT_ROUTE,)


# Where the web page's files are, beside template.yaml in the checkout.
WEB_FOLDER = "web"
# ``ApiGateway(web_root=CHECKOUT_WEB)``: serve the checkout's web/ folder if there is one.
CHECKOUT_WEB: Literal["checkout"] = "checkout"

# The page's own file types, spelled out rather than left to the machine's
# mimetypes table: a module script must come as JavaScript, and text needs its charset.
_WEB_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def checkout_web_root() -> Path | None:
    """The checkout's ``web/`` folder (found as template.yaml is), or None without one."""
    try:
        root = functions_dir().parent / WEB_FOLDER
    except HandlersNotFound:
        return None
    return root if (root / "index.html").is_file() else None


@dataclass(frozen=True)
class WebFiles:
    """Static files under ``root``, by URL path: ``/`` is ``index.html``.

    Only regular files inside ``root`` are served, never a hidden one (a path segment
    starting with a dot); anything else is not a file here (None).
    """

    root: Path
    index: str = "index.html"

    def reply(self, method: str, path: str) -> HttpReply | None:
        if method not in ("GET", "HEAD"):
            return None
        relative = unquote(path).lstrip("/") or self.index
        if relative.endswith("/") or any(part.startswith(".") for part in relative.split("/")):
            return None
        # safe_join refuses "..", absolute parts and backslashes (None).
        joined = safe_join(str(self.root), relative)
        if joined is None:
            return None
        file = Path(joined)
        if not file.is_file():
            return None
        suffix = file.suffix.lower()
        content_type = _WEB_TYPES.get(suffix) or (
            mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        )
        headers = [
            ("content-type", content_type),
            # Edits to the page show on reload; the files are small.
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
        ]
        return HttpReply(200, headers, file.read_bytes())


@dataclass(frozen=True)
class CorsRules:
    """The HTTP API's CORS configuration; defaults are template.yaml's."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...] = ("content-type", "x-api-key", "x-owner-id")
    allow_methods: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
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
    request_id: str | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends the function for this request.

    ``target`` is the request target as sent (percent-encoded path and query).
    """
    split = urlsplit(target)
    raw_path = split.path or "/"
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key in _HOP_BY_HOP:
            continue
        if key == "cookie":
            # Format 2.0 moves cookies out of the headers into their own list.
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        # Repeated headers are joined with commas, as format 2.0 does.
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
            "requestId": request_id or str(uuid.uuid4()),
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
        # Decoded; repeated keys joined with commas, as format 2.0 does.
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

    A dict with ``statusCode`` is a full response; anything else is the JSON body of
    a 200.
    """
    if not isinstance(result, dict) or "statusCode" not in result:
        return HttpReply(
            200, [("content-type", "application/json")], json.dumps(result).encode("utf-8")
        )
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("set-cookie", str(cookie)) for cookie in result.get("cookies") or [])
    raw_body = result.get("body")
    body = b""
    if raw_body is not None:
        text = raw_body if isinstance(raw_body, str) else json.dumps(raw_body)
        body = (
            base64.b64decode(text, validate=True)
            if result.get("isBase64Encoded")
            else text.encode("utf-8")
        )
    return HttpReply(int(result["statusCode"]), headers, body)


class _Refused(Exception):
    """A request the gateway answers itself, without calling the function."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = _json_reply(status, {"message": message})


class _Reply(Response):
    # API Gateway adds no content type the function did not give.
    default_mimetype = None


class _RequestHandler(WSGIRequestHandler):
    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        environ[_RAW_HEADERS_KEY] = list(self.headers.items())
        return environ

    def log(self, type: str, message: str, *args: Any) -> None:
        # werkzeug's own lines (one access line is logged per request by the gateway).
        logger.debug(message, *args)


class ApiGateway:
    """An HTTP server on ``host:port`` that invokes ``invoke(event)`` per request.

    ``routes`` defaults to template.yaml's (``declared_routes``). ``web_root`` is the
    folder of the web page served at ``/`` (``CHECKOUT_WEB``: the checkout's
    ``web/``, if any; None: no page). The socket is bound on construction, so a taken
    port fails here (``OSError``), before anything else starts. ``invoke`` may be
    called from several threads at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        invoke: Invoke,
        *,
        routes: Sequence[Route] | None = None,
        cors: CorsRules | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        web_root: Path | Literal["checkout"] | None = CHECKOUT_WEB,
    ) -> None:
        self._invoke = invoke
        self._cors = cors
        root = checkout_web_root() if web_root == CHECKOUT_WEB else web_root
        self._web = WebFiles(Path(root)) if root is not None else None
        self._max_body_bytes = max_body_bytes
        # Bound here rather than by werkzeug, which prints and exits on a taken port.
        family = select_address_family(host, port)
        listener = socket.create_server((host, port), family=family)
        try:
            self._server = make_server(
                host,
                port,
                self,
                threaded=True,
                request_handler=_RequestHandler,
                fd=listener.fileno(),
            )
        finally:
            # werkzeug listens on a duplicate of the descriptor.
            listener.close()
        chosen = declared_routes() if routes is None else tuple(routes)
        self._routes = tuple(sorted(chosen, key=lambda route: route.priority))
        logger.debug("HTTP API routes: %s", ", ".join(r.route_key for r in self._routes))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    @property
    def web_root(self) -> Path | None:
        """The folder the web page is served from, or None."""
        return self._web.root if self._web is not None else None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="api-gateway",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app: one HTTP request in, one HTTP response out."""
        started = time.monotonic()
        request = Request(environ)
        request_id = str(uuid.uuid4())
        headers: list[tuple[str, str]] = environ.get(_RAW_HEADERS_KEY) or list(
            request.headers.items()
        )
        origin = request.headers.get("origin")
        target = environ.get("RAW_URI") or request.full_path.rstrip("?")
        try:
            body = self._read_body(request)
            reply = self.respond(
                method=request.method,
                target=target,
                headers=headers,
                body=body,
                source_ip=request.remote_addr or "",
                request_id=request_id,
            )
        except _Refused as refused:
            reply = self._with_cors(refused.reply, origin)
        except Exception:
            logger.exception("the gateway failed on %s %s", request.method, target)
            reply = _json_reply(500, {"message": "Internal Server Error"})
        response = _Reply(reply.body, status=reply.status)
        for name, value in reply.headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        response.headers["apigw-requestid"] = request_id
        logger.info(
            '%s "%s %s" %d %dms',
            request.remote_addr,
            request.method,
            target,
            reply.status,
            (time.monotonic() - started) * 1000,
        )
        return response(environ, start_response)

    def _read_body(self, request: Request) -> bytes:
        raw_length = request.headers.get("content-length")
        # werkzeug reads an invalid length as 0; API Gateway refuses the request.
        if raw_length is not None and not _DECIMAL.fullmatch(raw_length.strip()):
            raise _Refused(400, "Invalid Content-Length")
        # Refused before reading anything, as API Gateway does.
        if (request.content_length or 0) > self._max_body_bytes:
            raise _Refused(413, "Request Entity Too Large")
        # One byte over the limit: werkzeug ends a streamed (chunked) body at
        # max_content_length without complaint, so an oversized one shows as longer.
        request.max_content_length = self._max_body_bytes + 1
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise _Refused(413, "Request Entity Too Large") from None
        except ClientDisconnected:
            # Also what werkzeug raises for a malformed chunk.
            raise _Refused(400, "Incomplete or malformed request body") from None
        if len(body) > self._max_body_bytes:
            raise _Refused(413, "Request Entity Too Large")
        return body

    def respond(
        self,
        *,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        source_ip: str,
        request_id: str | None = None,
    ) -> HttpReply:
        """What API Gateway answers to this request (the function's part included)."""
        origin = next((v for k, v in headers if k.lower() == "origin"), None)
        if method == "OPTIONS" and self._cors is not None:
            return self._preflight(origin)
        path = urlsplit(target).path or "/"
        route, params = self._route(method, path)
        if (route is None or route.is_default) and self._web is not None:
            # No declared route takes it ($default sorts last): it may be the page.
            page = self._web.reply(method, path)
            if page is not None:
                return page
        if route is None:
            reply = _json_reply(404, {"message": "Not Found"})
        else:
            event = build_event(
                method=method,
                target=target,
                headers=headers,
                body=body,
                source_ip=source_ip,
                route=route,
                path_parameters=params,
                request_id=request_id,
            )
            reply = self._call(event)
        return self._with_cors(reply, origin)

    def _route(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        """The most specific route that takes the request, and its path parameters."""
        for route in self._routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None, {}

    def _call(self, event: dict[str, Any]) -> HttpReply:
        try:
            return reply_from_result(self._invoke(event))
        except Exception:
            # What API Gateway answers when the integration fails (or answers something
            # that is not a response); the trace is the function's log, not the client's.
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
