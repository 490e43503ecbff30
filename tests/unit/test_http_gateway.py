"""The local HTTP API's translation rules, without a socket: which route takes a path,
which routes template.yaml declares, the payload 2.0 event a request becomes, and the
HTTP response a function's answer becomes."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mastering.devstack.defaults import ENV_FUNCTIONS_DIR
from mastering.devstack.http_gateway import (
    DEFAULT_ROUTE,
    DEFAULT_ROUTE_KEY,
    CorsRules,
    Route,
    TemplateRoutesError,
    build_event,
    declared_routes,
    reply_from_result,
    routes_from_template,
)
from tests.conftest import REPO, load_event

JOB = "3f0c1a52-7d1e-4b8e-9a61-2c4d5e6f7a8b"
GET_JOB = Route("GET", "/jobs/{job_id}")


def _event(
    *,
    method: str = "GET",
    target: str = f"/jobs/{JOB}",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    route: Route = GET_JOB,
) -> dict[str, Any]:
    params = route.match(method, target.split("?", 1)[0])
    assert params is not None
    return build_event(
        method=method,
        target=target,
        headers=headers or [("Host", "127.0.0.1:3000")],
        body=body,
        source_ip="127.0.0.1",
        route=route,
        path_parameters=params,
    )


def _shape(value: Any) -> Any:
    """The keys of nested dicts, with values reduced to their JSON type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


# ---------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("route", "method", "path", "params"),
    [
        (Route("GET", "/jobs/{job_id}"), "GET", f"/jobs/{JOB}", {"job_id": JOB}),
        (Route("GET", "/jobs/{job_id}"), "GET", "/jobs/a%20b", {"job_id": "a b"}),
        (Route("GET", "/jobs/{job_id}"), "POST", f"/jobs/{JOB}", None),
        (Route("GET", "/jobs/{job_id}"), "GET", "/jobs/", None),
        (Route("GET", "/jobs/{job_id}"), "GET", f"/jobs/{JOB}/cancel", None),
        (Route("POST", "/jobs/{job_id}/cancel"), "POST", "/jobs/j1/cancel", {"job_id": "j1"}),
        (Route("GET", "/jobs"), "GET", "/jobs/", None),
        (Route("ANY", "/jobs"), "DELETE", "/jobs", {}),
        (Route("GET", "/files/{proxy+}"), "GET", "/files/a/b/c.wav", {"proxy": "a/b/c.wav"}),
        (Route("GET", "/files/{proxy+}"), "GET", "/files/", None),
        (DEFAULT_ROUTE, "PATCH", "/anything/at/all", {}),
    ],
)
def test_a_route_takes_the_paths_api_gateway_would_give_it(
    route: Route, method: str, path: str, params: dict[str, str] | None
) -> None:
    # Given a route as the template declares it
    # When a request's method and path are matched against it
    matched = route.match(method, path)
    # Then it takes exactly the requests API Gateway sends it, with their parameters
    assert matched == params


def test_routes_sort_most_specific_first_and_default_last() -> None:
    # Given routes of every kind, declared in the worst order
    routes = [
        DEFAULT_ROUTE,
        Route("ANY", "/jobs/{job_id}"),
        Route("GET", "/files/{proxy+}"),
        Route("GET", "/jobs/{job_id}"),
        Route("GET", "/jobs/latest"),
    ]
    # When they are ordered as API Gateway chooses among matches
    ordered = [route.route_key for route in sorted(routes, key=lambda r: r.priority)]
    # Then exact paths come first, then parameters, a named method before ANY, then
    # greedy paths, then $default
    assert ordered == [
        "GET /jobs/latest",
        "GET /jobs/{job_id}",
        "ANY /jobs/{job_id}",
        "GET /files/{proxy+}",
        "$default",
    ]


def test_the_templates_routes_are_the_presign_functions_events() -> None:
    # Given the repository's template.yaml
    # When the gateway reads the routes it gives the presign function
    routes = routes_from_template(REPO / "template.yaml")
    # Then every HttpApi event is a route, with the template's method and path, and
    # everything else goes to the function too ($default), which answers JSON 404s
    keys = {route.route_key for route in routes}
    assert {"POST /jobs", "GET /jobs/{job_id}", "GET /presets", "GET /health"} <= keys
    assert DEFAULT_ROUTE_KEY in keys
    assert all(
        route.path.startswith("/") for route in routes if route.route_key != DEFAULT_ROUTE_KEY
    )


TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration:
        AllowOrigins: !Ref AllowedOrigins
  PresignFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${AWS::StackName}-presign"
      Events:
        Delete:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: delete, Path: "/jobs/{job_id}"}
        Anything:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: x-amazon-apigateway-any-method, Path: /x}
        Everything:
          Type: HttpApi
          Properties: {ApiId: !Ref Api}
        Nightly:
          Type: Schedule
          Properties: {Schedule: rate(1 day)}
"""


@pytest.fixture
def write_template(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "template.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_template_routes_read_sam_defaults_and_cloudformation_tags(
    write_template: Callable[[str], Path],
) -> None:
    # Given a template with CloudFormation tags, SAM's ANY method, an event with no
    # path or method, and an event that is not HTTP
    template = write_template(TEMPLATE)
    # When its routes are read
    routes = routes_from_template(template)
    # Then methods are upper case, the any-method is ANY, the bare event is $default,
    # and the schedule is no route
    assert routes == (Route("DELETE", "/jobs/{job_id}"), Route("ANY", "/x"), DEFAULT_ROUTE)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (TEMPLATE.replace("PresignFunction", "OtherFunction"), "no resource PresignFunction"),
        (TEMPLATE.replace('Path: "/jobs/{job_id}"', "Foo: 1"), "event Delete has no /Path"),
        (
            "Resources:\n  PresignFunction:\n    Type: AWS::Serverless::Function\n",
            "no HttpApi events",
        ),
    ],
)
def test_a_template_without_usable_routes_is_refused_by_name(
    write_template: Callable[[str], Path], text: str, complaint: str
) -> None:
    # Given a template that does not say which routes the function has
    template = write_template(text)
    # When its routes are read
    with pytest.raises(TemplateRoutesError) as refused:
        routes_from_template(template)
    # Then the error names the file and what is missing
    assert complaint in str(refused.value)
    assert str(template) in str(refused.value)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source checkout with both handlers and no template yet, as the stack finds it."""
    root = tmp_path / "checkout"
    for function in ("presign", "master"):
        (root / "functions" / function).mkdir(parents=True)
        (root / "functions" / function / "app.py").write_text("")
    monkeypatch.setenv(ENV_FUNCTIONS_DIR, str(root / "functions"))
    return root


def test_declared_routes_come_from_the_checkouts_template(checkout: Path) -> None:
    # Given a checkout whose template declares routes
    (checkout / "template.yaml").write_text(TEMPLATE)
    # When the gateway asks for its routes
    # Then they are that template's
    assert declared_routes() == routes_from_template(checkout / "template.yaml")


def test_without_a_template_every_request_takes_the_default_route(checkout: Path) -> None:
    # Given a checkout with handlers and no template.yaml
    # When the gateway asks for its routes
    # Then everything goes to the function, as a $default route does
    assert declared_routes() == (DEFAULT_ROUTE,)


def test_a_broken_template_falls_back_to_default_with_a_warning(
    checkout: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a template.yaml that is not YAML
    (checkout / "template.yaml").write_text("Resources: [unclosed\n")
    # When the gateway asks for its routes
    with caplog.at_level(logging.WARNING, logger="mastering.devstack.http_gateway"):
        routes = declared_routes()
    # Then it serves $default and says why
    assert routes == (DEFAULT_ROUTE,)
    assert "template.yaml" in caplog.text
    assert "$default" in caplog.text


# ---------------------------------------------------------------- events


def test_the_event_has_the_shape_of_api_gateways_own_example() -> None:
    # Given API Gateway's event for GET /jobs/{job_id} (events/api-get-job.json)
    example = load_event("api-get-job.json")
    # When the gateway builds the event for the same request
    event = _event(
        headers=[
            ("Content-Type", "application/json"),
            ("Host", "127.0.0.1:3000"),
            ("User-Agent", "spectrum-edge-function/1.0"),
            ("X-Api-Key", "local-dev-key"),
            ("X-Owner-Id", "user-1234"),
        ]
    )
    # Then it has the same fields of the same types, and the same route and parameters
    assert _shape(event) == _shape(example)
    assert event["routeKey"] == event["requestContext"]["routeKey"] == example["routeKey"]
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == example["rawPath"]
    assert event["pathParameters"] == example["pathParameters"]
    assert event["headers"] == {**example["headers"], "host": "127.0.0.1:3000"}
    assert event["requestContext"]["stage"] == "$default"
    assert event["requestContext"]["domainName"] == "127.0.0.1"


def test_headers_are_lower_case_repeats_joined_and_cookies_listed() -> None:
    # Given a request with mixed-case names, a repeated header, two cookie lines and a
    # hop-by-hop header
    headers = [
        ("Host", "api.local:3000"),
        ("X-Trace", "a"),
        ("x-trace", "b"),
        ("Cookie", "session=abc; theme=dark"),
        ("Cookie", "lang=en"),
        ("Transfer-Encoding", "chunked"),
    ]
    # When it becomes an event
    event = _event(headers=headers)
    # Then names are lower case, repeats are joined with commas, cookies have their
    # own list, and the connection's headers are not the function's business
    assert event["headers"] == {"host": "api.local:3000", "x-trace": "a,b"}
    assert event["cookies"] == ["session=abc", "theme=dark", "lang=en"]


def test_query_parameters_are_decoded_and_repeats_joined_with_commas() -> None:
    # Given a query with a repeated key, an encoded value and an empty one
    target = "/jobs?status=queued&status=failed&owner=a%2Cb%20c&cursor="
    # When it becomes an event
    event = _event(method="GET", target=target, route=Route("GET", "/jobs"))
    # Then the raw query is kept as sent, and the parameters are decoded, repeats joined
    assert event["rawQueryString"] == "status=queued&status=failed&owner=a%2Cb%20c&cursor="
    assert event["rawPath"] == "/jobs"
    assert event["queryStringParameters"] == {
        "status": "queued,failed",
        "owner": "a,b c",
        "cursor": "",
    }
    assert "pathParameters" not in event


def test_no_query_and_no_body_leave_their_fields_out() -> None:
    # Given a plain GET
    # When it becomes an event
    event = _event()
    # Then there is no query, body or cookie field, as in API Gateway's events
    assert event["rawQueryString"] == ""
    for absent in ("queryStringParameters", "body", "cookies"):
        assert absent not in event
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("content_type", "body", "as_text"),
    [
        ("application/json", b'{"preset": "balanced"}', True),
        ("application/json; charset=utf-8", '{"name": "café"}'.encode(), True),
        ("text/plain", b"hello", True),
        ("application/vnd.api+json", b"{}", True),
        ("application/x-www-form-urlencoded", b"a=1", True),
        ("text/plain", b"\xff\xfe not utf-8", False),
        ("audio/wav", b"RIFF\x00\x00WAVE", False),
        ("application/octet-stream", b"\x00\x01", False),
        ("", b"no type at all", False),
    ],
)
def test_text_bodies_pass_as_text_and_others_as_base64(
    content_type: str, body: bytes, as_text: bool
) -> None:
    # Given a POST body of some content type
    headers = [("Host", "127.0.0.1"), ("Content-Type", content_type)]
    # When it becomes an event
    event = _event(
        method="POST", target="/jobs", headers=headers, body=body, route=Route("POST", "/jobs")
    )
    # Then text arrives as text, anything else base64-encoded, and either way unchanged
    assert event["isBase64Encoded"] is not as_text
    received = event["body"].encode() if as_text else base64.b64decode(event["body"])
    assert received == body


# ---------------------------------------------------------------- responses


def test_a_full_response_keeps_status_headers_cookies_and_body() -> None:
    # Given a function's response with headers, cookies and a JSON body
    result = {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-job": "j1"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": json.dumps({"job_id": "j1"}),
        "isBase64Encoded": False,
    }
    # When it becomes the HTTP response
    reply = reply_from_result(result)
    # Then status, headers, one Set-Cookie per cookie and the body are the function's
    assert reply.status == 201
    assert ("x-job", "j1") in reply.headers
    assert [v for k, v in reply.headers if k == "set-cookie"] == ["a=1; Path=/", "b=2"]
    assert json.loads(reply.body) == {"job_id": "j1"}


def test_a_base64_response_body_is_sent_as_bytes() -> None:
    # Given a function that answers binary content base64-encoded
    audio = bytes(range(256))
    result = {"statusCode": 200, "body": base64.b64encode(audio).decode(), "isBase64Encoded": True}
    # When it becomes the HTTP response
    # Then the client gets the bytes
    assert reply_from_result(result).body == audio


@pytest.mark.parametrize("result", [{"status": "ok"}, ["a", 1], "plain words", 7])
def test_anything_but_a_response_is_the_json_body_of_a_200(result: Any) -> None:
    # Given a function that returns a value with no statusCode
    # When it becomes the HTTP response
    reply = reply_from_result(result)
    # Then format 2.0 makes it a 200 whose JSON body is that value
    assert reply.status == 200
    assert ("content-type", "application/json") in reply.headers
    assert json.loads(reply.body) == result


# ---------------------------------------------------------------- CORS


@pytest.mark.parametrize(
    ("allowed", "origin", "expected"),
    [
        (("https://app.test",), "https://app.test", "https://app.test"),
        (("https://app.test/",), "https://APP.test", "https://APP.test"),
        (("https://app.test",), "https://evil.test", None),
        (("https://app.test",), None, None),
        (("*",), "https://anyone.test", "*"),
    ],
)
def test_cors_allows_only_configured_origins(
    allowed: tuple[str, ...], origin: str | None, expected: str | None
) -> None:
    # Given the API's allowed origins
    # When a request comes from an origin
    # Then only a configured one (any case, trailing slash or not) is allowed
    assert CorsRules(allowed).allowed_origin(origin) == expected


def test_cors_defaults_allow_the_apis_methods_and_headers() -> None:
    # Given CORS configured with origins only, as the local stack does
    rules = CorsRules(("https://app.test",))
    # Then browsers may use every method the API has, and its own headers
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= set(rules.allow_methods)
    assert {"content-type", "x-api-key", "x-owner-id"} <= set(rules.allow_headers)
