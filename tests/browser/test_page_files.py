"""The web page's files: the local HTTP API serves them without shadowing any API route,
they are complete, and the vendored chart library is exactly the pinned npm package.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mastering.devstack.http_gateway import DEFAULT_ROUTE, ApiGateway, Route

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
VENDORED = {
    # web/vendor/<name>: the file of the npm package it must equal
    "uPlot.esm.js": "dist/uPlot.esm.js",
    "uPlot.min.css": "dist/uPlot.min.css",
    "uPlot.LICENSE": "LICENSE",
}
# Guards against a hung server, not performance checks.
TIMEOUT_S = 10


@dataclass
class Function:
    """Stands in for the presign function: records the route of each request it gets."""

    routes: list[str] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.routes.append(event["routeKey"])
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class Running:
    gateway: ApiGateway
    function: Function

    def request(self, method: str, target: str) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=TIMEOUT_S)
        try:
            # skip_host etc. are not needed; the target is sent exactly as given.
            connection.putrequest(method, target, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()


@pytest.fixture
def serve_gateway() -> Iterator[Callable[..., Running]]:
    """Start gateways on a free loopback port; every one is stopped afterwards."""
    started: list[ApiGateway] = []

    def start(routes: tuple[Route, ...], **options: Any) -> Running:
        function = Function()
        gateway = ApiGateway("127.0.0.1", 0, function, routes=routes, **options)
        started.append(gateway)
        gateway.start()
        return Running(gateway, function)

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A page folder holding, besides its own files, files named like API routes."""
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>page</title>")
    (root / "app.js").write_text("export const x = 1;")
    (root / "sub" / "style.css").write_text("body {}")
    (root / "health").write_text("a file named like a route")
    (root / "jobs").write_text("a file named like a route")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("not the page's")
    return root


API_ROUTES = (Route("GET", "/health"), Route("POST", "/jobs"), Route("GET", "/jobs/{job_id}"))


def test_the_page_and_its_files_are_served_with_their_types(
    serve_gateway: Callable[..., Running], site: Path
) -> None:
    # Given a gateway with the API's routes and a page folder
    api = serve_gateway(API_ROUTES, web_root=site)
    # When the browser asks for the page and its files
    page = api.request("GET", "/")
    script = api.request("GET", "/app.js")
    style = api.request("GET", "/sub/style.css")
    head = api.request("HEAD", "/app.js")
    # Then each comes with the type a browser needs, and reloads are not stale
    assert page.status == 200
    assert page.body == (site / "index.html").read_bytes()
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert head.status == 200
    assert head.body == b""
    # And the function never ran
    assert api.function.routes == []


def test_the_api_routes_win_over_files_of_the_same_name(
    serve_gateway: Callable[..., Running], site: Path
) -> None:
    # Given a page folder with files named "health" and "jobs"
    api = serve_gateway((*API_ROUTES, DEFAULT_ROUTE), web_root=site)
    # When those paths are requested with the API's methods, and others
    api.request("GET", "/health")
    api.request("POST", "/jobs")
    api.request("POST", "/app.js")
    answer = api.request("GET", "/jobs")
    # Then the routes take their requests; a file is only what $default would get
    assert api.function.routes == ["GET /health", "POST /jobs", "$default"]
    assert answer.body == (site / "jobs").read_bytes()


@pytest.mark.parametrize(
    "target",
    [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub/..%2f..%2foutside.txt",
        "/.env",
        "/%2eenv",
        "/sub/",
        "/missing.js",
        "/sub%5c..%5c..%5coutside.txt",
    ],
)
def test_nothing_outside_the_page_or_hidden_is_served(
    serve_gateway: Callable[..., Running], site: Path, target: str
) -> None:
    # Given a gateway serving a page folder, with no $default route
    api = serve_gateway(API_ROUTES, web_root=site)
    # When a path that leaves the folder, is hidden or does not exist is asked for
    answer = api.request("GET", target)
    # Then it is API Gateway's 404, and no file's content
    assert answer.status == 404
    assert json.loads(answer.body) == {"message": "Not Found"}


def test_without_a_page_folder_the_root_is_the_apis(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a gateway told to serve no page
    api = serve_gateway((*API_ROUTES, DEFAULT_ROUTE), web_root=None)
    # When / is asked for
    api.request("GET", "/")
    # Then the function's $default route gets it
    assert api.function.routes == ["$default"]


def test_by_default_the_checkouts_web_folder_is_served(
    serve_gateway: Callable[..., Running],
) -> None:
    # Given a gateway with its defaults
    api = serve_gateway(API_ROUTES)
    # When the page is asked for
    answer = api.request("GET", "/")
    # Then it is the repository's web/index.html
    assert api.gateway.web_root == WEB
    assert answer.body == (WEB / "index.html").read_bytes()


def _references(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        found = re.findall(r'(?:src|href)="([^"]+)"', text)
    else:
        found = re.findall(r'(?:from|import\()\s*"([^"]+)"', text)
    return [ref for ref in found if not ref.startswith(("data:", "http:", "https:", "#"))]


def test_every_file_the_page_loads_is_in_the_folder() -> None:
    # Given the page and its scripts
    sources = [WEB / "index.html", *sorted(WEB.glob("*.js"))]
    # When every relative file they load is resolved
    missing = [
        f"{source.name} -> {ref}"
        for source in sources
        for ref in _references(source)
        if not (source.parent / ref).resolve().is_file()
    ]
    # Then each is there (the page has no build step to catch a typo)
    assert missing == []
    assert _references(WEB / "index.html")


def test_the_vendored_chart_library_is_the_pinned_npm_package() -> None:
    # Given the version package.json pins and what npm ci installed
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]["uplot"]
    installed = REPO / "node_modules" / "uplot"
    assert (installed / "package.json").is_file(), "uplot is not installed: run `npm ci`"
    assert json.loads((installed / "package.json").read_text())["version"] == pinned
    # Then web/vendor/ holds exactly its files, byte for byte (`make web-vendor` copies them)
    for vendored, original in VENDORED.items():
        assert (WEB / "vendor" / vendored).read_bytes() == (installed / original).read_bytes(), (
            f"web/vendor/{vendored} differs from uplot {pinned}: run `make web-vendor`"
        )
    assert sorted(p.name for p in (WEB / "vendor").iterdir()) == sorted(VENDORED)
