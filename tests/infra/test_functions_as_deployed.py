"""The functions, configured exactly as template.yaml configures them, doing their
jobs against moto; and their IAM policies held against what the code did.

One run (module fixture) takes jobs through every path that touches AWS: create,
upload, master (a success and a missing upload), read, expire on read, the scheduled
sweep (an abandoned upload, a stuck job) and the master's on-failure destination;
then every job's ending through the table's stream to the job-events function, and
from the webhook queue to the webhook sender, with a webhook configured so the
webhook secret is read too. Each function is its own process with the template's
environment (see ``deployed.py``), so a setting the template forgets, a table index
it lacks, or a bucket or queue it names differently from the code fails here, and
each AWS call is recorded for the IAM tests.
"""

from __future__ import annotations

import copy
import io
import json
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import requests

from tests.audio_factory import pcm16_wav_bytes
from tests.infra.deployed import (
    API_KEY,
    FunctionProcess,
    Moto,
    Need,
    create_resources,
    moto_server,
)
from tests.infra.stack import REPO, Deployment, Grant, function_role, load_template, role_grants
from tests.jobflow import post_upload

EVENTS = REPO / "events"
ORIGINS = ["https://app.example.test", "http://localhost:5173"]
FUNCTIONS = (
    "PresignFunction",
    "MasterFunction",
    "JobLifecycleFunction",
    "JobEventsFunction",
    "WebhookSenderFunction",
)
# A webhook the sender refuses before connecting (loopback): the secret is still read.
WEBHOOK_URL = "https://127.0.0.1:9/ai-mastering-webhook"
OWNER = "user-infra"
RATE = 44_100


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def api_event(
    method: str, path: str, *, route: str | None = None, body: Any = None, key: str = API_KEY
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event as API Gateway sends it for ``route``."""
    event = copy.deepcopy(load_event("api-get-job.json"))
    route_key = route or f"{method} {path}"
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"] = {
        "content-type": "application/json",
        "origin": ORIGINS[0],
        "x-api-key": key,
        "x-owner-id": OWNER,
    }
    event.pop("pathParameters", None)
    if "{job_id}" in route_key:
        event["pathParameters"] = {"job_id": path.split("/")[2]}
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    event = copy.deepcopy(load_event("s3-put-target.json"))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = bucket
    record["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["object"]["key"] = key
    record["object"]["size"] = size
    return event


def master_failure_event(bucket: str, key: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("lifecycle-master-failure.json"))
    record = event["requestPayload"]["Records"][0]["s3"]
    record["bucket"]["name"] = bucket
    record["object"]["key"] = key
    return event


def song(seconds: float = 3.0) -> bytes:
    """A 16-bit stereo WAV of a few decaying notes."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.exp(-3.0 * np.mod(t, 0.5))
    voice = [
        envelope * sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in (110, 220, 330))
        for _ in range(2)
    ]
    samples = np.stack(voice, axis=1)
    samples *= 0.3 / np.max(np.abs(samples))
    return pcm16_wav_bytes(samples, RATE)


@dataclass
class Run:
    deployment: Deployment
    translated: Deployment
    functions: dict[str, FunctionProcess]
    answers: dict[str, Any] = field(default_factory=dict)
    routes: set[tuple[str, str]] = field(default_factory=set)
    result_wav: bytes = b""

    def body(self, name: str) -> Any:
        return json.loads(self.answers[name]["body"])


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    yield from moto_server()


@pytest.fixture(scope="module")
def run(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    import imageio_ffmpeg

    folder = tmp_path_factory.mktemp("deployed")
    deployment = Deployment(load_template(), {"AllowedOrigins": ORIGINS, "WebhookUrl": WEBHOOK_URL})
    create_resources(deployment, moto.endpoint)
    uploads = deployment.physical_name("UploadsBucket")
    table = moto.client("dynamodb")
    table_name = deployment.physical_name("JobsTable")
    (folder / "tmp").mkdir()
    # What the master image's own ENV provides (its /tmp, its ffmpeg), on this machine.
    image_env = {"WORK_DIR": str(folder / "tmp"), "FFMPEG_PATH": imageio_ffmpeg.get_ffmpeg_exe()}
    functions = {
        name: FunctionProcess(
            deployment,
            name,
            endpoint=moto.endpoint,
            folder=folder,
            image_env=image_env if name == "MasterFunction" else None,
        )
        for name in FUNCTIONS
    }
    run = Run(deployment, deployment.translate(), functions)
    presign, master, lifecycle = (
        functions[name] for name in ("PresignFunction", "MasterFunction", "JobLifecycleFunction")
    )

    def create(label: str, size: int) -> str:
        body = {
            "target": {"filename": f"{label}.wav", "size": size, "content_type": "audio/wav"},
            "preset": "balanced",
        }
        answer = presign.invoke(api_event("POST", "/jobs", body=body))
        run.answers[f"create-{label}"] = answer
        assert answer["statusCode"] == 201, answer
        job_id: str = json.loads(answer["body"])["job_id"]
        return job_id

    def put_status(job_id: str, status: str, deadline_at: int) -> None:
        # Time passing, or a master that died mid-job: the job's status and deadline are
        # the table's own key attributes (the index the sweep reads).
        table.update_item(
            TableName=table_name,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET #s = :s, deadline_at = :d",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}, ":d": {"N": str(deadline_at)}},
        )

    try:
        run.routes = presign.routes()
        audio = song()
        mastered = create("mastered", len(audio))
        missing = create("missing", len(audio))
        read_late = create("read-late", len(audio))
        abandoned = create("abandoned", len(audio))
        stuck = create("stuck", len(audio))
        crashed = create("crashed", len(audio))

        # A browser uploads with the presigned POST; S3 tells the master.
        upload = json.loads(run.answers["create-mastered"]["body"])["uploads"]["target"]
        response = post_upload(upload, "mastered.wav", audio, "audio/wav")
        assert response.status_code in (200, 201, 204), response.text
        key = f"uploads/{mastered}/target"
        run.answers["master-mastered"] = master.invoke(s3_event(uploads, key, len(audio)))
        # An event for an upload that is not (or no longer) there.
        key = f"uploads/{missing}/target"
        run.answers["master-missing"] = master.invoke(s3_event(uploads, key, len(audio)))

        overdue, in_time = 1, int(time.time()) + 3600
        for job_id, status, deadline_at in (
            (read_late, "awaiting_upload", overdue),
            (abandoned, "awaiting_upload", overdue),
            (stuck, "processing", overdue),
            (crashed, "queued", in_time),
        ):
            put_status(job_id, status, deadline_at)

        for label, job_id in (("mastered", mastered), ("missing", missing)):
            run.answers[f"get-{label}"] = presign.invoke(api_event("GET", f"/jobs/{job_id}"))
        run.answers["get-read-late"] = presign.invoke(api_event("GET", f"/jobs/{read_late}"))
        run.answers["health"] = presign.invoke(api_event("GET", "/health"))
        run.answers["presets"] = presign.invoke(api_event("GET", "/presets"))
        run.answers["unknown-route"] = presign.invoke(
            api_event("PUT", "/no/such/route", route="$default")
        )
        run.answers["wrong-key"] = presign.invoke(
            api_event("GET", f"/jobs/{mastered}", key="not-the-key")
        )

        url = run.body("get-mastered")["results"]["wav16"]["url"]
        run.result_wav = requests.get(url, timeout=30).content

        run.answers["sweep"] = lifecycle.invoke(load_event("lifecycle-schedule.json"))
        run.answers["master-failure"] = lifecycle.invoke(
            master_failure_event(uploads, f"uploads/{crashed}/target")
        )
        # Listing, cancelling and deleting, the last on the mastered job (its upload and
        # results are in S3, so deleting it lists and removes objects in both buckets).
        run.answers["list"] = presign.invoke(api_event("GET", "/jobs"))
        cancelled = create("cancelled", len(audio))
        run.answers["cancel"] = presign.invoke(
            api_event("POST", f"/jobs/{cancelled}/cancel", route="POST /jobs/{job_id}/cancel")
        )
        # The cancelled job's upload lands after the cancel: its event starts nothing
        # and the master removes the file.
        late = f"uploads/{cancelled}/target"
        moto.client("s3").put_object(Bucket=uploads, Key=late, Body=audio[:1000])
        run.answers["master-late"] = master.invoke(s3_event(uploads, late, 1000))
        run.answers["late-upload-left"] = (
            moto.client("s3").list_objects_v2(Bucket=uploads, Prefix=late).get("KeyCount", 0)
        )
        moto.client("s3").put_object(
            Bucket=uploads, Key=f"uploads/{mastered}/target", Body=audio[:1000]
        )
        run.answers["delete"] = presign.invoke(
            api_event("DELETE", f"/jobs/{mastered}", route="DELETE /jobs/{job_id}")
        )
        run.answers["get-deleted"] = presign.invoke(api_event("GET", f"/jobs/{mastered}"))
        run.answers["job-ids"] = {
            "cancelled": cancelled,
            "abandoned": abandoned,
            "stuck": stuck,
            "crashed": crashed,
            "mastered": mastered,
            "missing": missing,
            "read-late": read_late,
        }
        run.answers["webhooks"] = _job_endings_to_webhooks(deployment, moto, functions)
        yield run
    finally:
        for process in functions.values():
            process.stop()


def _job_endings_to_webhooks(
    deployment: Deployment, moto: Moto, functions: dict[str, FunctionProcess]
) -> dict[str, Any]:
    """The table's stream into the job-events function, the webhook queue into the
    sender, as Lambda's event source mappings feed them (the local stack's pollers)."""
    from mastering.devstack.event_sources import QueueSource, StreamSource
    from mastering.notify.events import STREAM_FILTER_PATTERN

    table = deployment.physical_name("JobsTable")
    stream_arn = moto.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    sqs = moto.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=deployment.physical_name("WebhookQueue"))["QueueUrl"]
    relayed: list[Any] = []
    sent: list[Any] = []

    def relay(event: dict[str, Any]) -> Any:
        relayed.extend(r["dynamodb"]["NewImage"]["status"]["S"] for r in event["Records"])
        return functions["JobEventsFunction"].invoke(event, remaining_s=60)

    def send(event: dict[str, Any]) -> Any:
        sent.extend(event["Records"])
        return functions["WebhookSenderFunction"].invoke(event, remaining_s=90)

    stream = StreamSource(
        streams=moto.client("dynamodbstreams"),
        stream_arn=stream_arn,
        invoke=relay,
        pattern=STREAM_FILTER_PATTERN,
        on_failure=lambda record: pytest.fail(f"stream records given up on: {record}"),
        function_arn=deployment.arn("JobEventsFunction"),
    )
    while stream.poll():
        pass
    queue = QueueSource(
        sqs=sqs,
        queue_url=queue_url,
        queue_arn=deployment.arn("WebhookQueue"),
        invoke=send,
        wait_s=0,
    )
    while queue.poll():
        pass
    left = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    return {"relayed": sorted(relayed), "sent": len(sent), "left": int(left)}


# ---------------------------------------------------------------- the functions work


def test_a_job_masters_end_to_end_with_the_template_settings(run: Run) -> None:
    # Given the three functions configured only by the template
    # When a preset job is created, uploaded and mastered
    # Then it succeeds and its result downloads as a WAV through the presigned GET
    assert run.answers["master-mastered"] == {
        "jobs": {run.answers["job-ids"]["mastered"]: "succeeded"}
    }
    job = run.body("get-mastered")
    assert job["status"] == "succeeded", job
    with wave.open(io.BytesIO(run.result_wav)) as result:
        assert result.getframerate() == RATE
        assert result.getnframes() == 3 * RATE


def test_failures_end_as_the_api_promises(run: Run) -> None:
    # Given jobs that went wrong in each way the stack handles
    # Then each one ended with its reason, and nothing stayed pending
    assert run.body("get-missing")["error"]["code"] == "upload_missing"
    assert run.body("get-read-late")["status"] == "expired"
    ids = run.answers["job-ids"]
    assert run.answers["sweep"] == {"expired": [ids["abandoned"]], "failed": [ids["stuck"]]}
    assert run.answers["master-failure"] == {"failed": [ids["crashed"]]}
    assert run.answers["wrong-key"]["statusCode"] == 401


def test_jobs_are_listed_cancelled_and_deleted_as_deployed(run: Run) -> None:
    # Given the owner's jobs, then a cancel of a waiting one and a delete of the mastered
    listed = run.body("list")
    # Then the listing shows the owner's jobs newest first, the cancel ended the job,
    # and the deleted job is gone
    created = [
        json.loads(run.answers[k]["body"])["job_id"] for k in run.answers if k.startswith("create-")
    ]
    assert [job["job_id"] for job in listed["jobs"]] == list(reversed(created))[1:]
    assert run.body("cancel")["status"] == "cancelled"
    assert run.answers["master-late"] == {"jobs": {}}
    assert run.answers["late-upload-left"] == 0
    assert run.answers["delete"]["statusCode"] == 204
    assert run.answers["get-deleted"]["statusCode"] == 404


def test_every_ending_goes_through_the_stream_and_the_queue_to_the_sender(
    run: Run, moto: Moto
) -> None:
    # Given the seven jobs the run ended (one succeeded, three failed, two expired, one
    # cancelled; deleting the succeeded one later ends nothing new)
    webhooks = run.answers["webhooks"]
    # Then each ending reached the job-events function once, and its event the sender
    assert webhooks["relayed"] == sorted(
        ["succeeded", "cancelled"] + ["failed"] * 3 + ["expired"] * 2
    )
    assert webhooks["sent"] == 7
    # And the sender was done with each (this webhook is refused: loopback), none left
    assert webhooks["left"] == 0
    # And the ended jobs' uploads are gone
    uploads = moto.client("s3").list_objects_v2(
        Bucket=run.deployment.physical_name("UploadsBucket"), Prefix="uploads/"
    )
    assert [o["Key"] for o in uploads.get("Contents", [])] == []


def test_unknown_routes_answer_the_json_error_shape(run: Run) -> None:
    # Given a request API Gateway matches to no route but $default
    answer = run.answers["unknown-route"]
    # Then the function answers it, in the API's error shape
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["error"]["code"] == "not_found"


def test_the_http_api_routes_every_route_of_the_code_and_the_rest_to_it(run: Run) -> None:
    # Given the routes the presign code serves
    served = {(method, path.replace("<", "{").replace(">", "}")) for method, path in run.routes}
    # When SAM builds the HTTP API from the template
    (api,) = run.translated.of_type("AWS::ApiGatewayV2::Api").values()
    body = api["Properties"]["Body"]
    routed = {
        (method.upper(), path)
        for path, methods in body["paths"].items()
        for method in methods
        if method != "parameters"
    }
    # Then each of them is a route, and $default sends anything else to the function
    assert served <= routed, f"not routed: {sorted(served - routed)}"
    assert ("X-AMAZON-APIGATEWAY-ANY-METHOD", "/$default") in routed
    presign_uri = json.dumps(run.translated.resolve({"Fn::GetAtt": ["PresignFunction", "Arn"]}))
    for path, methods in body["paths"].items():
        for method, spec in methods.items():
            uri = json.dumps(run.translated.resolve(spec["x-amazon-apigateway-integration"]["uri"]))
            assert presign_uri.strip('"') in uri, f"{method} {path} goes elsewhere: {uri}"


def test_cors_is_the_http_apis_alone(run: Run) -> None:
    # Given the origins the stack is deployed for
    (api,) = run.translated.of_type("AWS::ApiGatewayV2::Api").values()
    cors = run.translated.resolve(api["Properties"]["Body"]["x-amazon-apigateway-cors"])
    # Then API Gateway answers for exactly those origins, every method the API has,
    # and the headers callers send
    assert cors["allowOrigins"] == ORIGINS
    methods = {method for method, _ in run.routes}
    assert methods | {"OPTIONS"} <= set(cors["allowMethods"])
    assert {"content-type", "x-api-key", "x-owner-id"} <= {h.lower() for h in cors["allowHeaders"]}
    # And the function adds no CORS headers of its own, on success or error
    for name in ("create-mastered", "get-mastered", "unknown-route", "wrong-key"):
        headers = {h.lower() for h in (run.answers[name].get("headers") or {})}
        headers |= {h.lower() for h in (run.answers[name].get("multiValueHeaders") or {})}
        assert not {h for h in headers if h.startswith("access-control-")}, name


def test_the_job_records_expire_by_the_tables_ttl_attribute(run: Run, moto: Moto) -> None:
    # Given the table's TTL attribute as the template declares it
    ttl = run.deployment.resolve(
        run.deployment.resources["JobsTable"]["Properties"]["TimeToLiveSpecification"]
    )
    assert ttl["Enabled"] is True
    # Then every job the code wrote carries it, as epoch seconds
    items = moto.client("dynamodb").scan(TableName=run.deployment.physical_name("JobsTable"))
    assert items["Items"]
    for item in items["Items"]:
        assert int(item[ttl["AttributeName"]]["N"]) > time.time()


# ---------------------------------------------------------------- settings


def test_every_setting_the_template_gives_is_read_by_the_code(run: Run) -> None:
    # Given the variables the template sets, globally and per function
    template = run.deployment.template
    global_names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    read_anywhere = set().union(*(p.env_read() for p in run.functions.values()))
    # Then no setting is dead: each global is read by some function, and each
    # function's own by that function
    assert global_names <= read_anywhere, f"never read: {sorted(global_names - read_anywhere)}"
    for name, process in run.functions.items():
        own = set(
            run.deployment.resources[name]["Properties"].get("Environment", {}).get("Variables", {})
        )
        unread = own - process.env_read()
        assert not unread, f"{name} never reads {sorted(unread)}"


def test_settings_the_code_requires_are_set_on_every_function() -> None:
    # Given the names load_settings reads, and which of them it cannot do without
    from tests.infra.settings_probe import required_settings

    required = required_settings()
    assert required, "load_settings requires nothing? the probe is broken"
    # Then the template sets each of them on every function
    deployment = Deployment(load_template())
    for name in deployment.functions():
        missing = required - set(deployment.function_environment(name))
        assert not missing, f"{name} lacks {sorted(missing)}"


# ---------------------------------------------------------------- IAM


# Grants SAM adds for Lambda itself to use, not the code: the master's
# lambda:InvokeFunction on its on-failure destination (checked with the async
# configuration in test_stack.py), the job-events function's sqs:SendMessage to its
# stream's on-failure queue. (function, action, resource's logical id)
SAM_GRANTS = {
    ("MasterFunction", "lambda:InvokeFunction", "JobLifecycleFunction"),
    ("JobEventsFunction", "sqs:SendMessage", "JobEventsDeadLetterQueue"),
}
# Grants for paths no deterministic run reaches, each with the code that needs it.
UNREACHED = {
    # worker/runner.py: a job that fails, or is ended by the lifecycle function, after
    # its results were uploaded deletes them (DeleteObjects on the written keys).
    ("MasterFunction", "s3:DeleteObject", "/results/*"),
    # notify/delivery.py: a failed attempt hides the message until its next one; this
    # run's webhook is refused (final) since only loopback is reachable here, and the
    # deployed code refuses loopback. tests/flow/test_webhooks.py covers retries.
    ("WebhookSenderFunction", "sqs:ChangeMessageVisibility", ":spectrum-mastering-webhooks"),
}


def _grants(run: Run, function: str) -> list[Grant]:
    return role_grants(run.translated, function_role(run.translated, function))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_role_allows_every_call_the_code_made(run: Run, function: str) -> None:
    # Given what the function asked of AWS during the run, presigned URLs included
    needs = run.functions[function].needs()
    assert needs, f"{function} made no AWS call?"
    grants = _grants(run, function)
    # Then its role allows each of them
    denied = [n for n in needs if not any(g.allows(n.action, n.resource) for g in grants)]
    assert not denied, "\n".join(f"{n.action} on {n.resource} ({n.because})" for n in denied)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_role_allows_nothing_the_code_did_not_use(run: Run, function: str) -> None:
    # Given the role's grants, as (action, resource pattern) pairs
    needs: list[Need] = run.functions[function].needs()
    unused = []
    for grant in _grants(run, function):
        for action in grant.actions:
            for resource in grant.resources:
                if any(
                    (function, action) == (f, a) and resource == run.translated.arn(target)
                    for f, a, target in SAM_GRANTS
                ):
                    continue
                if any(
                    (function, action) == (f, a) and resource.endswith(suffix)
                    for f, a, suffix in UNREACHED
                ):
                    continue
                single = Grant(grant.role, (action,), (resource,))
                if not any(single.allows(n.action, n.resource) for n in needs):
                    unused.append(f"{action} on {resource}")
    # Then every one of them was needed by some call of the run
    assert not unused, f"{function} may do more than its code does: {unused}"
