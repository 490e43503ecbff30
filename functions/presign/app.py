"""HTTP API handler: jobs (create, list, show, cancel, delete), presets, health and
the OpenAPI document.

Thin on purpose: each route checks the caller, lets Powertools validate its input
against the request models (the same models the OpenAPI document is generated
from) and calls one domain function. Typed errors become JSON error bodies in one
place below.

No ``from __future__ import annotations`` here: Powertools reads the routes'
annotations at import time to build validation and the OpenAPI document.
"""

import base64
import json
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import ENGINE, METRICS_NAMESPACE, SERVICE_NAME, __version__
from mastering.config import Settings, load_settings
from mastering.errors import InvalidRequest, MasteringError
from mastering.jobs.model import JobStatus
from mastering.jobs.store import DynamoJobStore
from mastering.options import loudness_targets
from mastering.presets import PRESETS
from mastering.service.auth import check_api_key, expected_api_key
from mastering.service.jobs import (
    ApiPorts,
    cancel_job,
    create_job,
    delete_job,
    get_job,
    list_jobs,
)
from mastering.service.openapi import openapi_document
from mastering.service.requests import CreateJobRequest, describe_errors
from mastering.service.responses import (
    Health,
    JobCreated,
    JobList,
    JobView,
    PresetList,
    empty_response,
    error_responses,
    ok_response,
)
from mastering.storage.objects import S3Storage

logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)
metrics = Metrics(service=SERVICE_NAME, namespace=METRICS_NAMESPACE)

MAX_OWNER_LENGTH = 256
MAX_CURSOR_LENGTH = 1024


def _parse_json_body(text: str) -> Any:
    # json.loads recurses per nesting level: a body nested ~1000 deep would raise
    # RecursionError (a 500) instead of the JSONDecodeError Powertools turns into a
    # validation error.
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


# CORS is the HTTP API's (template.yaml CorsConfiguration): API Gateway answers the
# preflights and adds the headers, so the function does not repeat them.
app = APIGatewayHttpResolver(
    enable_validation=True,
    json_body_deserializer=_parse_json_body,
    # An answer that does not match its declared model is our bug: say so as a 500.
    response_validation_error_http_code=500,
)


_ports: ApiPorts | None = None


def configure(settings: Settings | None = None) -> ApiPorts:
    """Build the function's ports from ``settings`` (the environment's by default):
    once per container on Lambda; the local stack and the tests pass their own."""
    global _ports
    settings = settings or load_settings()
    _ports = ApiPorts(
        settings=settings,
        store=DynamoJobStore(
            settings.jobs_table, aws=settings.aws, retention_days=settings.job_retention_days
        ),
        storage=S3Storage(settings.aws),
    )
    return _ports


def ports() -> ApiPorts:
    return _ports or configure()


# The end user the caller acts for; whoever holds the API key is trusted to name it.
OwnerHeader = Annotated[
    str,
    Header(
        alias="x-owner-id",
        max_length=MAX_OWNER_LENGTH,
        description="The caller's end user (e.g. the Supabase user id); jobs are scoped to it",
    ),
]
JobIdPath = Annotated[str, Path(description="The job's id, as POST /jobs returned it")]


def _authorise(owner: str) -> str:
    """Check the API key and return the caller's end user (the empty owner if absent)."""
    check_api_key(app.current_event.headers.get("x-api-key"), expected_api_key(ports().settings))
    return owner.strip()


def _json(status: int, body: dict[str, Any]) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type="application/json", body=body)


@app.post(
    "/jobs",
    summary="Create a job and get presigned upload forms",
    responses={201: ok_response(JobCreated, "Created")}
    | error_responses(400, 401, 413, 415, 429, 500),
)
@tracer.capture_method
def post_job(
    request: Annotated[CreateJobRequest, Body()], owner: OwnerHeader = ""
) -> Response[dict[str, Any]]:
    created = create_job(request, owner=_authorise(owner), ports=ports())
    metrics.add_metric(name="JobsCreated", unit=MetricUnit.Count, value=1)
    logger.info("job created", extra={"job_id": created["job_id"]})
    return _json(201, created)


@app.get(
    "/jobs",
    summary="List the owner's jobs, newest first",
    responses={200: ok_response(JobList, "One page of jobs")} | error_responses(400, 401, 500),
)
@tracer.capture_method
def get_jobs(
    owner: OwnerHeader = "",
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR_LENGTH, description="next_cursor of a page")
    ] = None,
) -> Response[dict[str, Any]]:
    listed = list_jobs(
        owner=_authorise(owner), status=status, limit=limit, cursor=cursor, ports=ports()
    )
    return _json(200, listed)


@app.get(
    "/jobs/<job_id>",
    summary="A job's status, progress, results and measurements",
    responses={200: ok_response(JobView, "The job")} | error_responses(400, 401, 404, 500),
)
@tracer.capture_method
def get_job_route(job_id: JobIdPath, owner: OwnerHeader = "") -> Response[dict[str, Any]]:
    return _json(200, get_job(job_id, owner=_authorise(owner), ports=ports()))


@app.post(
    "/jobs/<job_id>/cancel",
    summary="Cancel a job that has not ended",
    responses={200: ok_response(JobView, "The cancelled job")}
    | error_responses(400, 401, 404, 409, 500),
)
@tracer.capture_method
def cancel_job_route(job_id: JobIdPath, owner: OwnerHeader = "") -> Response[dict[str, Any]]:
    cancelled = cancel_job(job_id, owner=_authorise(owner), ports=ports())
    metrics.add_metric(name="JobsCancelled", unit=MetricUnit.Count, value=1)
    return _json(200, cancelled)


@app.delete(
    "/jobs/<job_id>",
    summary="Cancel a live job, delete its files, then the job",
    responses={204: empty_response("Deleted")} | error_responses(400, 401, 404, 500),
)
@tracer.capture_method
def delete_job_route(job_id: JobIdPath, owner: OwnerHeader = "") -> Response[None]:
    delete_job(job_id, owner=_authorise(owner), ports=ports())
    logger.info("job deleted", extra={"job_id": job_id})
    return Response(status_code=204)


@app.get(
    "/presets",
    summary="Presets and the platform loudness targets",
    responses={200: ok_response(PresetList, "Presets")} | error_responses(400, 401, 500),
)
def get_presets(owner: OwnerHeader = "") -> Response[dict[str, Any]]:
    _authorise(owner)
    return _json(
        200,
        {
            "presets": [preset.to_public() for preset in PRESETS.values()],
            "loudness_targets": loudness_targets(),
        },
    )


@app.get(
    "/health",
    summary="Liveness and versions (no key needed)",
    responses={200: ok_response(Health, "Up")},
    security=[],
)
def health() -> Response[dict[str, Any]]:
    return _json(
        200, {"status": "ok", "service": SERVICE_NAME, "version": __version__, "engine": ENGINE}
    )


@app.get(
    "/openapi.json",
    summary="This document (no key needed)",
    responses={200: empty_response("The OpenAPI 3.1 document of this API")},
    security=[],
)
def get_openapi() -> Response[dict[str, Any]]:
    return _json(200, openapi_document(app))


@app.exception_handler(  # type: ignore[untyped-decorator]
    [RequestValidationError, RequestUnsupportedContentType]
)
def handle_invalid_request(
    error: RequestValidationError | RequestUnsupportedContentType,
) -> Response[dict[str, Any]]:
    # Powertools validates before the route runs; a caller without the right key
    # still gets 401, not a description of its mistakes.
    try:
        check_api_key(
            app.current_event.headers.get("x-api-key"), expected_api_key(ports().settings)
        )
    except MasteringError as unauthorised:
        return _error_answer(unauthorised)
    refused = InvalidRequest(describe_errors(error.errors()))
    logger.info("request refused", extra={"code": str(refused.code), "reason": refused.message})
    return _json(refused.http_status, {"error": refused.to_dict()})


# Powertools types exception_handler loosely; the handlers themselves are typed.
@app.exception_handler(MasteringError)  # type: ignore[untyped-decorator]
def handle_mastering_error(error: MasteringError) -> Response[dict[str, Any]]:
    return _error_answer(error)


def _error_answer(error: MasteringError) -> Response[dict[str, Any]]:
    if error.http_status >= 500:
        logger.error("request failed", extra={"code": str(error.code)})
    else:
        logger.info("request refused", extra={"code": str(error.code), "reason": error.message})
    return _json(error.http_status, {"error": error.to_dict()})


@app.exception_handler(ResponseValidationError)  # type: ignore[untyped-decorator]
def handle_wrong_answer(error: ResponseValidationError) -> Response[dict[str, Any]]:
    # An answer that breaks its own declared model is a bug here, not the caller's.
    logger.error("answer does not match its model", extra={"errors": str(error.errors())[:2000]})
    return _json(500, {"error": {"code": "internal_error", "message": "Something went wrong"}})


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(error: Exception) -> Response[dict[str, Any]]:
    # Never a stack trace to the caller; the log has it.
    logger.exception("unexpected error")
    return _json(500, {"error": {"code": "internal_error", "message": "Something went wrong"}})


@app.not_found
def not_found(_: Exception) -> Response[dict[str, Any]]:
    return _json(404, {"error": {"code": "not_found", "message": "No such route"}})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(_bodies_as_json(event), context)


def _bodies_as_json(event: dict[str, Any]) -> dict[str, Any]:
    """Read every request body as JSON text, whatever Content-Type it claims.

    The API only takes JSON, and `curl -d '{...}'` sends it labelled as a form.
    Powertools would parse form and multipart bodies by their type instead (and
    fail with a bare ValueError on a multipart type without a boundary), and
    would fail on base64 bodies that are not UTF-8: both become plain JSON parse
    errors (400) here.
    """
    body = event.get("body")
    if not body:
        return event
    headers = {**(event.get("headers") or {}), "content-type": "application/json"}
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(str(body), validate=False).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            body = "\ufffd"
    return {**event, "headers": headers, "body": body, "isBase64Encoded": False}
