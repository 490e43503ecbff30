"""The stack's functions run as template.yaml configures them, against moto.

Each function runs in a process of its own (``lambda_driver.py``) whose environment
is exactly what the template gives it, plus what Lambda itself provides (region,
credentials) and what stands in for AWS here (``AWS_ENDPOINT_URL`` pointing at a moto
server on 127.0.0.1). The buckets, the table and the SSM parameters are created from
the template's own definitions and names. What the code asks of AWS is recorded, so
tests can hold each function's IAM policy against what its code really does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.stack import ACCOUNT, REGION, REPO, Deployment

DRIVER = Path(__file__).with_name("lambda_driver.py")
API_KEY = "infra-test-api-key"
WEBHOOK_SECRET = "whsec_" + "aW5mcmEtdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGVz"
# The answer of a hung handler; not a performance check.
INVOKE_DEADLINE_S = 120.0
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class Need:
    """One IAM permission a recorded call needed: an action on a resource ARN."""

    action: str
    resource: str
    because: str


def _object_arn(params: dict[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def needs_of(entry: dict[str, Any]) -> list[Need]:
    """What IAM must allow for one recorded call or presigned request."""
    if "presign" in entry:
        # Whoever uses the URL acts with the signing role's authority.
        return [Need(entry["presign"], _object_arn(entry["params"]), json.dumps(entry))]
    action: str = entry["call"]
    params: dict[str, Any] = entry["params"]
    why = json.dumps(entry)
    service, _, operation = action.partition(":")
    if service == "s3":
        bucket_arn = f"arn:aws:s3:::{params['Bucket']}"
        if operation in ("GetObject", "HeadObject"):
            needs = [Need("s3:GetObject", _object_arn(params), why)]
            if entry.get("error") in MISSING:
                # Without ListBucket, S3 answers a missing key with 403, not 404.
                needs.append(Need("s3:ListBucket", bucket_arn, why))
            return needs
        if operation in ("PutObject", "CreateMultipartUpload", "UploadPart"):
            return [Need("s3:PutObject", _object_arn(params), why)]
        if operation == "CompleteMultipartUpload":
            return [Need("s3:PutObject", _object_arn(params), why)]
        if operation == "DeleteObjects":
            return [
                Need("s3:DeleteObject", _object_arn({**params, "Key": key}), why)
                for key in entry["keys"]
            ]
        if operation in ("DeleteObject", "AbortMultipartUpload"):
            return [Need(f"s3:{operation}", _object_arn(params), why)]
        if operation in ("ListObjectsV2", "ListObjects", "HeadBucket"):
            return [Need("s3:ListBucket", bucket_arn, why)]
        raise AssertionError(f"map {action} to its IAM actions here: {why}")
    if service == "dynamodb":
        if operation == "TransactWriteItems":
            kinds = {"ConditionCheck": "ConditionCheckItem", "Put": "PutItem"}
            kinds |= {"Update": "UpdateItem", "Delete": "DeleteItem"}
            return [
                Need(f"dynamodb:{kinds[item['kind']]}", _table_arn(item["TableName"]), why)
                for item in entry["items"]
            ]
        target = _table_arn(params["TableName"])
        if "IndexName" in params:
            target += f"/index/{params['IndexName']}"
        return [Need(action, target, why)]
    if service == "sqs":
        # .../<account>/<queue name>, whatever the host (moto's or AWS's).
        account, name = str(params["QueueUrl"]).rstrip("/").split("/")[-2:]
        return [Need(action, f"arn:aws:sqs:{REGION}:{account}:{name}", why)]
    if service == "ssm" and operation in ("GetParameter", "GetParameters"):
        return [
            Need(
                "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{params['Name']}", why
            )
        ]
    return [Need(action, "*", why)]


def _table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


class FunctionProcess:
    """One function as a warm Lambda container."""

    def __init__(
        self,
        deployment: Deployment,
        logical_id: str,
        *,
        endpoint: str,
        folder: Path,
        image_env: dict[str, str] | None = None,
    ) -> None:
        self.logical_id = logical_id
        self.record = folder / f"{logical_id}.jsonl"
        self.log = folder / f"{logical_id}.log"
        self.template_env = deployment.function_environment(logical_id)
        code_dir, handler = code_of(deployment, logical_id)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO / "src"),
            # What Lambda itself sets (the role's credentials, the region).
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            # AWS itself, here.
            "AWS_ENDPOINT_URL": endpoint,
            **(image_env or {}),
            **self.template_env,
        }
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(DRIVER), str(code_dir), handler, str(self.record)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
                env=env,
                text=True,
            )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"{self.logical_id} died:\n{self.output()}"
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, f"{answer['error']}\n{self.output()}"
        return answer

    def invoke(self, event: dict[str, Any], remaining_s: float = 300.0) -> Any:
        return self._ask({"event": event, "remaining_s": remaining_s})["result"]

    def routes(self) -> set[tuple[str, str]]:
        return {(method, path) for method, path in self._ask({"routes": True})["routes"]}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def env_read(self) -> set[str]:
        return {entry["env"] for entry in self.records() if "env" in entry}

    def needs(self) -> list[Need]:
        return [
            need
            for entry in self.records()
            if "call" in entry or "presign" in entry
            for need in needs_of(entry)
        ]

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def code_of(deployment: Deployment, logical_id: str) -> tuple[Path, str]:
    """Where the function's code lives in the repository, and its handler."""
    resource = deployment.resources[logical_id]
    props = resource["Properties"]
    if props.get("PackageType") == "Image":
        dockerfile = REPO / resource["Metadata"]["Dockerfile"]
        (handler,) = props["ImageConfig"]["Command"]
        return dockerfile.parent, handler
    return REPO / props["CodeUri"], props["Handler"]


def create_resources(deployment: Deployment, endpoint: str) -> None:
    """The stack's buckets, table and secrets, from the template's own definitions."""
    import boto3

    options: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3 = boto3.client("s3", **options)
    for logical_id in deployment.of_type("AWS::S3::Bucket"):
        s3.create_bucket(Bucket=deployment.physical_name(logical_id))
    sqs = boto3.client("sqs", **options)
    queues = deployment.of_type("AWS::SQS::Queue")
    # Dead-letter queues first: a queue's redrive policy names one.
    for logical_id in sorted(queues, key=lambda name: "RedrivePolicy" in str(queues[name])):
        props = deployment.resolve(queues[logical_id]["Properties"])
        attributes = {
            key: str(props[key])
            for key in ("VisibilityTimeout", "MessageRetentionPeriod")
            if key in props
        }
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        sqs.create_queue(QueueName=deployment.physical_name(logical_id), Attributes=attributes)
    dynamodb = boto3.client("dynamodb", **options)
    for logical_id, table in deployment.of_type("AWS::DynamoDB::Table").items():
        props = deployment.resolve(table["Properties"])
        name = deployment.physical_name(logical_id)
        dynamodb.create_table(
            TableName=name,
            **{
                key: props[key]
                for key in (
                    "AttributeDefinitions",
                    "KeySchema",
                    "GlobalSecondaryIndexes",
                    "BillingMode",
                )
                if key in props
            },
            **(
                {"StreamSpecification": {"StreamEnabled": True, **props["StreamSpecification"]}}
                if "StreamSpecification" in props
                else {}
            ),
        )
        if "TimeToLiveSpecification" in props:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"]
            )
    ssm = boto3.client("ssm", **options)
    for value in ssm_parameter_names(deployment):
        secret = API_KEY if value.endswith("api-key") else WEBHOOK_SECRET
        ssm.put_parameter(Name=value, Value=secret, Type="SecureString", Overwrite=True)


def ssm_parameter_names(deployment: Deployment) -> set[str]:
    """The SSM parameters the functions are told to read (``*_PARAMETER`` variables)."""
    return {
        value
        for function in deployment.functions()
        for name, value in deployment.function_environment(function).items()
        if name.endswith("_PARAMETER") and value
    }


@dataclass
class Moto:
    endpoint: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def moto_server() -> Iterator[Moto]:
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
