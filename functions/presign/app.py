"""HTTP API handler: POST /jobs, GET /jobs/{job_id}, GET /presets, GET /health.

Thin on purpose: each route checks the caller, parses its input and calls one
domain function. Typed errors become JSON error bodies in one place below.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mastering import ENGINE, SERVICE_NAME, __version__
from mastering.config import Settings, load_settings
from mastering.errors import InvalidRequest, MasteringError
from mastering.jobs.store import DynamoJobStore
from mastering.options import loudness_targets
from mastering.presets import PRESETS
from mastering.service.auth import check_api_key, expected_api_key
from mastering.service.jobs import ApiPorts, create_job, get_job
from mastering.service.requests import parse_create_job
from mastering.storage.objects import S3Storage

logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)
metrics = Metrics(service=SERVICE_NAME)

MAX_OWNER_LENGTH = 256


# CORS is the HTTP API's (template.yaml CorsConfiguration): API Gateway answers the
# preflights and adds the headers, so the function does not repeat them.
app = APIGatewayHttpResolver()


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


def _authorised_owner() -> str:
    """Check the API key and return the caller's end user (the empty owner if absent)."""
    check_api_key(app.current_event.headers.get("x-api-key"), expected_api_key(ports().settings))
    owner = app.current_event.headers.get("x-owner-id", "").strip()
    if len(owner) > MAX_OWNER_LENGTH:
        raise InvalidRequest(f"X-Owner-Id must be at most {MAX_OWNER_LENGTH} characters")
    return owner


def _json(status: int, body: dict[str, Any]) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type="application/json", body=body)


@app.post("/jobs")
@tracer.capture_method
def post_job() -> Response[dict[str, Any]]:
    owner = _authorised_owner()
    try:
        body = app.current_event.json_body
    except ValueError as error:
        raise InvalidRequest("The request body is not valid JSON") from error
    created = create_job(parse_create_job(body), owner=owner, ports=ports())
    metrics.add_metric(name="JobsCreated", unit=MetricUnit.Count, value=1)
    logger.info("job created", extra={"job_id": created["job_id"]})
    return _json(201, created)


@app.get("/jobs/<job_id>")
@tracer.capture_method
def get_job_route(job_id: str) -> Response[dict[str, Any]]:
    owner = _authorised_owner()
    return _json(200, get_job(job_id, owner=owner, ports=ports()))


@app.get("/presets")
def get_presets() -> Response[dict[str, Any]]:
    _authorised_owner()
    return _json(
        200,
        {
            "presets": [preset.to_public() for preset in PRESETS.values()],
            "loudness_targets": loudness_targets(),
        },
    )


@app.get("/health")
def health() -> Response[dict[str, Any]]:
    return _json(
        200, {"status": "ok", "service": SERVICE_NAME, "version": __version__, "engine": ENGINE}
    )


# Powertools types exception_handler loosely; the handlers themselves are typed.
@app.exception_handler(MasteringError)  # type: ignore[untyped-decorator]
def handle_mastering_error(error: MasteringError) -> Response[dict[str, Any]]:
    if error.http_status >= 500:
        logger.error("request failed", extra={"code": str(error.code)})
    else:
        logger.info("request refused", extra={"code": str(error.code), "reason": error.message})
    return _json(error.http_status, {"error": error.to_dict()})


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
    return app.resolve(event, context)
