"""What the stack guarantees by configuration alone, read from template.yaml as
CloudFormation would deploy it (parameters chosen, intrinsics resolved, SAM's
transform applied; see ``stack.py``). What the functions do with it is
``test_functions_as_deployed.py``.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import tomllib
from typing import Any

import pytest

from tests.infra.deployed import code_of
from tests.infra.stack import REPO, TEMPLATE, Deployment, load_template

BUCKETS = ("UploadsBucket", "ResultsBucket")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def deployment(template: dict[str, Any]) -> Deployment:
    return Deployment(template)


@pytest.fixture(scope="module")
def translated(deployment: Deployment) -> Deployment:
    return deployment.translate()


# ---------------------------------------------------------------- storage


def _denies(statement: dict[str, Any], action: str, resource: str) -> bool:
    actions = (
        statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    )
    targets = statement["Resource"]
    targets = targets if isinstance(targets, list) else [targets]
    return (
        statement["Effect"] == "Deny"
        and statement.get("Principal") == "*"
        and any(fnmatch.fnmatchcase(action, a) for a in actions)
        and any(fnmatch.fnmatchcase(resource, t) for t in targets)
    )


@pytest.mark.parametrize("bucket", BUCKETS)
def test_buckets_are_private_encrypted_and_tls_only(deployment: Deployment, bucket: str) -> None:
    props = deployment.resolve(deployment.resources[bucket]["Properties"])
    # Given the bucket as deployed
    # Then nothing can make it or its objects public, ACLs are off, objects are encrypted
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]:
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    # And its policy refuses every request that is not over TLS, to bucket and objects
    policies = [
        deployment.resolve(res["Properties"])
        for res in deployment.of_type("AWS::S3::BucketPolicy").values()
        if res["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    (policy,) = policies
    bucket_arn = deployment.arn(bucket)
    insecure = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if str(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
    ]
    for action in ("s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"):
        for resource in (bucket_arn, f"{bucket_arn}/results/x", f"{bucket_arn}/uploads/x"):
            assert any(_denies(s, action, resource) for s in insecure), (action, resource)
    assert all(s["Effect"] == "Deny" for s in policy["PolicyDocument"]["Statement"])


def test_uploads_live_a_day_and_results_as_long_as_the_parameter_says(
    template: dict[str, Any],
) -> None:
    # Given a stack deployed with a retention of 9 days
    deployment = Deployment(template, {"ResultRetentionDays": 9})
    # Then uploads (and unfinished multipart uploads) go after a day, results after 9
    for bucket, days in (("UploadsBucket", 1), ("ResultsBucket", 9)):
        rules = deployment.resolve(deployment.resources[bucket]["Properties"])[
            "LifecycleConfiguration"
        ]["Rules"]
        whole = [
            r
            for r in rules
            if r["Status"] == "Enabled" and not r.get("Prefix") and not r.get("Filter")
        ]
        assert any(r.get("ExpirationInDays") == days for r in whole), bucket
        assert any(r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1 for r in whole)


def test_buckets_let_browsers_in_only_from_the_configured_origins(template: dict[str, Any]) -> None:
    origins = ["https://app.example.test", "http://localhost:5173"]
    deployment = Deployment(template, {"AllowedOrigins": origins})
    methods = {}
    for bucket in BUCKETS:
        rules = deployment.resolve(deployment.resources[bucket]["Properties"])["CorsConfiguration"]
        for rule in rules["CorsRules"]:
            assert rule["AllowedOrigins"] == origins
        methods[bucket] = {m for rule in rules["CorsRules"] for m in rule["AllowedMethods"]}
    # Browsers upload with the presigned POST and fetch results; nothing else.
    assert methods["UploadsBucket"] == {"POST"}
    assert methods["ResultsBucket"] <= {"GET", "HEAD"}


def test_uploads_and_only_uploads_start_the_master(translated: Deployment) -> None:
    # Given the S3 notifications SAM generates
    notifications = {
        name: translated.resolve(res["Properties"].get("NotificationConfiguration", {}))
        for name, res in translated.of_type("AWS::S3::Bucket").items()
    }
    # Then objects created under uploads/ of the uploads bucket invoke the master, and
    # nothing else invokes anything
    (config,) = notifications["UploadsBucket"]["LambdaConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert config["Function"] == translated.arn("MasterFunction")
    assert config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
    assert set(notifications["UploadsBucket"]) == {"LambdaConfigurations"}
    assert not notifications["ResultsBucket"]


# ---------------------------------------------------------------- functions


def test_a_master_that_fails_is_handed_to_the_lifecycle_function_once(
    translated: Deployment,
) -> None:
    # Given the master's asynchronous invocation settings
    (config,) = (
        translated.resolve(res["Properties"])
        for res in translated.of_type("AWS::Lambda::EventInvokeConfig").values()
    )
    assert config["FunctionName"] == translated.physical_name("MasterFunction")
    # Then a failed run is not retried, and goes to the lifecycle function
    assert config["MaximumRetryAttempts"] == 0
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == translated.arn("JobLifecycleFunction")
    # And the master's role may invoke it (SAM's grant for the destination)
    role = translated.resolve(translated.resources["MasterFunctionRole"]["Properties"])
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert any(
        "lambda:InvokeFunction" in str(s["Action"]) and destination in str(s["Resource"])
        for s in statements
    )


def test_the_master_timeout_is_one_parameter(template: dict[str, Any]) -> None:
    # Given a stack deployed with another master timeout
    deployment = Deployment(template, {"MasterTimeout": 420})
    # Then the function's timeout and what the code is told are that value
    assert deployment.function_property("MasterFunction", "Timeout") == 420
    for function in deployment.functions():
        assert deployment.function_environment(function)["MASTER_TIMEOUT_S"] == "420"
    # And no deploy configuration repeats the number
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    overrides = " ".join(
        str(section.get("parameters", {}).get("parameter_overrides", ""))
        for env in config.values()
        if isinstance(env, dict)
        for section in env.values()
        if isinstance(section, dict)
    )
    assert "MasterTimeout" not in overrides


def test_handlers_the_template_names_exist(deployment: Deployment) -> None:
    # Given each function's code folder and handler (zip Handler, image Command)
    for function in deployment.functions():
        folder, handler = code_of(deployment, function)
        module, _, name = handler.rpartition(".")
        source = folder / f"{module}.py"
        # Then that module defines that function
        assert source.is_file(), f"{function}: no {source}"
        defined = {
            node.name
            for node in ast.parse(source.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        assert name in defined, f"{function}: {source} has no {name}()"


def test_every_makefile_built_function_has_its_make_target(deployment: Deployment) -> None:
    import subprocess

    # Given each function SAM builds with `make build-<LogicalId>`
    for function in deployment.functions():
        resource = deployment.resources[function]
        if resource.get("Metadata", {}).get("BuildMethod") != "makefile":
            continue
        makefile = REPO / resource["Properties"]["CodeUri"] / "Makefile"
        # Then that Makefile has the target (a dry run names what it would do)
        result = subprocess.run(
            ["make", "-n", "-f", str(makefile), f"build-{function}", "ARTIFACTS_DIR=/nonexistent"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{function}: {result.stderr}"


def test_zip_functions_run_python_3_12(deployment: Deployment) -> None:
    for function in deployment.functions():
        props = deployment.resources[function]["Properties"]
        if props.get("PackageType") != "Image":
            assert deployment.function_property(function, "Runtime") == "python3.12", function


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    # Given a stack deployed with a 14-day log retention
    deployment = Deployment(template, {"LogRetentionDays": 14})
    for function in deployment.functions():
        props = deployment.resources[function]["Properties"]
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        group_props = deployment.resolve(deployment.resources[group]["Properties"])
        # Then its logs go to a group the stack owns, kept 14 days, under the name
        # Lambda would otherwise create without retention
        assert group_props["RetentionInDays"] == 14
        assert group_props["LogGroupName"] == f"/aws/lambda/{deployment.physical_name(function)}"


def test_every_layer_is_used_by_a_function(deployment: Deployment) -> None:
    # A deployed layer that no function lists is cost and attack surface for nothing.
    used = {
        layer.get("Ref")
        for function in deployment.functions()
        for layer in deployment.resources[function]["Properties"].get("Layers", [])
        if isinstance(layer, dict)
    }
    orphans = set(deployment.of_type("AWS::Serverless::LayerVersion")) - used
    assert not orphans


def test_the_longest_stack_name_still_gives_valid_bucket_names(template: dict[str, Any]) -> None:
    # Given the stack name samconfig.toml deploys, and the longest AWS region name
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    stack = config["default"]["global"]["parameters"]["stack_name"]
    assert stack == stack.lower()
    longest_region = "ap-southeast-5"  # 14 characters, the longest in use
    for bucket in BUCKETS:
        pattern = template["Resources"][bucket]["Properties"]["BucketName"]["Fn::Sub"]
        name = (
            pattern.replace("${AWS::StackName}", stack)
            .replace("${AWS::AccountId}", "123456789012")
            .replace("${AWS::Region}", longest_region)
        )
        # Then S3 accepts the bucket names (3-63 lowercase letters, digits, dashes)
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name


# ---------------------------------------------------------------- secrets


def test_no_secret_travels_through_cloudformation(template: dict[str, Any]) -> None:
    # Only *names* of SSM parameters are in the template; the values are SecureStrings
    # the operator creates (docs/deploy.md), which CloudFormation never sees.
    for res in template["Resources"].values():
        assert res["Type"] not in {"AWS::SSM::Parameter", "AWS::SecretsManager::Secret"}
    deployment = Deployment(template)
    for function in deployment.functions():
        env = deployment.function_environment(function)
        assert not {"API_KEY", "WEBHOOK_SECRET"} & set(env), function
    text = TEMPLATE.read_text()
    assert "{{resolve:" not in text, "a dynamic reference would copy the secret into CFN"
    # Nothing that looks like a key or token (long hex or base64 runs) as a literal.
    assert not re.findall(r"[0-9a-fA-F]{32,}|[A-Za-z0-9+/]{40,}={0,2}", text)


def test_the_code_and_the_local_stack_default_to_the_templates_master_timeout(
    template: dict[str, Any],
) -> None:
    from mastering.config import DEFAULT_MASTER_TIMEOUT_S
    from mastering.devstack import defaults

    # Given the template's default master timeout
    default = template["Parameters"]["MasterTimeout"]["Default"]
    # Then the code, when nothing says otherwise, and the local stack assume the same
    assert DEFAULT_MASTER_TIMEOUT_S == defaults.MASTER_TIMEOUT_S == int(default)


# ---------------------------------------------------------------- webhooks


def _event_source(translated: Deployment, function: str) -> dict[str, Any]:
    (mapping,) = (
        translated.resolve(res["Properties"])
        for res in translated.of_type("AWS::Lambda::EventSourceMapping").values()
        if res["Properties"]["FunctionName"] == {"Ref": function}
    )
    return mapping  # type: ignore[no-any-return]


def test_every_ended_job_reaches_the_job_events_function_and_only_those(
    deployment: Deployment, translated: Deployment
) -> None:
    from mastering.notify.events import STREAM_FILTER_PATTERN

    # Given the jobs table and the job-events function's event source
    table = deployment.resolve(deployment.resources["JobsTable"]["Properties"])
    mapping = _event_source(translated, "JobEventsFunction")
    # Then the table streams old and new images, and the function reads that stream
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert mapping["EventSourceArn"] == deployment.resolve(
        {"Fn::GetAtt": ["JobsTable", "StreamArn"]}
    )
    # And its filter is the code's (a live status becoming a terminal one)
    (only,) = mapping["FilterCriteria"]["Filters"]
    assert json.loads(only["Pattern"]) == STREAM_FILTER_PATTERN
    # And a record that fails is retried (alone, bisected) for as long as the stream
    # keeps it, then reported to a queue rather than dropped
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == -1
    assert mapping["MaximumRecordAgeInSeconds"] == 86_400
    destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == translated.arn("JobEventsDeadLetterQueue")


def test_the_webhook_queue_keeps_an_event_through_its_whole_retry_schedule(
    deployment: Deployment, translated: Deployment
) -> None:
    from mastering.notify.events import MAX_ATTEMPTS, RETRY_SCHEDULE_S
    from mastering.notify.webhooks import ATTEMPT_TIMEOUT_S

    queue = deployment.resolve(deployment.resources["WebhookQueue"]["Properties"])
    parked = deployment.resolve(deployment.resources["WebhookDeadLetterQueue"]["Properties"])
    sender = _event_source(translated, "WebhookSenderFunction")
    timeout = deployment.function_property("WebhookSenderFunction", "Timeout")
    # Then after as many receives as the schedule has attempts, an event is parked
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": deployment.arn("WebhookDeadLetterQueue"),
        "maxReceiveCount": MAX_ATTEMPTS,
    }
    # And the queue keeps it longer than the schedule lasts (with a day to spare),
    # the dead-letter queue as long as SQS can
    schedule_s = sum(RETRY_SCHEDULE_S) + MAX_ATTEMPTS * timeout
    assert int(queue["MessageRetentionPeriod"]) >= schedule_s + 86_400
    assert int(parked["MessageRetentionPeriod"]) == 14 * 86_400
    # And the sender reads it in batches it can try in one invocation, reporting
    # each failure, with the queue's visibility 6x its timeout (AWS's advice)
    assert sender["EventSourceArn"] == deployment.arn("WebhookQueue")
    assert sender["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sender["BatchSize"] * (ATTEMPT_TIMEOUT_S + 5) < timeout
    assert int(queue["VisibilityTimeout"]) == 6 * timeout
    # And the operator finds the dead-letter queue in the outputs
    outputs = deployment.resolve(deployment.template["Outputs"])
    assert outputs["WebhookDeadLetterQueueArn"]["Value"] == deployment.arn("WebhookDeadLetterQueue")
    assert outputs["WebhookDeadLetterQueueUrl"]["Value"] == deployment.queue_url(
        "WebhookDeadLetterQueue"
    )


def test_only_the_webhook_sender_knows_the_webhook(translated: Deployment) -> None:
    # Given each function's environment and role
    deployment = Deployment(translated.template, {"WebhookUrl": "https://hooks.example.com/in"})
    for function in deployment.functions():
        env = deployment.function_environment(function)
        grants = str(translated.resolve(translated.resources[f"{function}Role"]["Properties"]))
        sends = function == "WebhookSenderFunction"
        # Then the webhook's URL, secret and ports reach the sender alone
        assert ("WEBHOOK_URL" in env) is sends, function
        assert ("WEBHOOK_SECRET_PARAMETER" in env) is sends, function
        assert ("webhook-secret" in grants) is sends, function
    env = deployment.function_environment("WebhookSenderFunction")
    assert env["WEBHOOK_ALLOWED_PORTS"] == "443"
    assert env["WEBHOOK_QUEUE_URL"] == deployment.queue_url("WebhookQueue")


def test_the_local_stack_creates_what_the_template_defines(deployment: Deployment) -> None:
    from moto import mock_aws

    from mastering import clients
    from mastering.config import AwsSettings, Settings
    from mastering.devstack import event_sources, stack
    from mastering.devstack.resources import create_resources, create_webhook_queues

    # Given the local stack's resources, made in an emulator
    aws = AwsSettings(region="us-east-1", static_credentials=("testing", "testing"))
    settings = Settings(
        jobs_table="jobs", uploads_bucket="uploads", results_bucket="results", aws=aws
    )
    clients.reset_clients()
    try:
        with mock_aws():
            create_resources(settings)
            queues = create_webhook_queues(
                aws, events="webhooks", dead_letters="webhooks-dlq", relay_failures="failures"
            )
            table = clients.dynamodb_resource(aws).meta.client.describe_table(TableName="jobs")
            sqs = clients.sqs_client(aws)
            made = {
                name: sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])[
                    "Attributes"
                ]
                for name, queue in (
                    ("WebhookQueue", queues.events),
                    ("WebhookDeadLetterQueue", queues.dead_letters),
                    ("JobEventsDeadLetterQueue", queues.relay_failures),
                )
            }
    finally:
        clients.reset_clients()
    # Then the table has the template's keys, indexes and stream
    declared = deployment.resolve(deployment.resources["JobsTable"]["Properties"])
    local = table["Table"]
    assert local["KeySchema"] == declared["KeySchema"]
    assert sorted(a["AttributeName"] for a in local["AttributeDefinitions"]) == sorted(
        a["AttributeName"] for a in declared["AttributeDefinitions"]
    )
    assert {
        index["IndexName"]: (index["KeySchema"], index["Projection"]["ProjectionType"])
        for index in local["GlobalSecondaryIndexes"]
    } == {
        index["IndexName"]: (index["KeySchema"], index["Projection"]["ProjectionType"])
        for index in declared["GlobalSecondaryIndexes"]
    }
    assert (
        local["StreamSpecification"]["StreamViewType"]
        == (declared["StreamSpecification"]["StreamViewType"])
    )
    # And the queues keep, hide and park messages as the template's do
    for name, attributes in made.items():
        props = deployment.resolve(deployment.resources[name]["Properties"])
        for key in ("MessageRetentionPeriod", "VisibilityTimeout"):
            if key in props:
                assert int(attributes[key]) == int(props[key]), (name, key)
    redrive = json.loads(made["WebhookQueue"]["RedrivePolicy"])
    declared_redrive = deployment.resolve(deployment.resources["WebhookQueue"]["Properties"])[
        "RedrivePolicy"
    ]
    assert int(redrive["maxReceiveCount"]) == declared_redrive["maxReceiveCount"]
    assert redrive["deadLetterTargetArn"] == made["WebhookDeadLetterQueue"]["QueueArn"]
    # And its event sources and functions are sized as the template's
    for function, timeout, memory in (
        ("JobEventsFunction", stack.JOB_EVENTS_TIMEOUT_S, stack.JOB_EVENTS_MEMORY_MB),
        ("WebhookSenderFunction", stack.WEBHOOK_SENDER_TIMEOUT_S, stack.WEBHOOK_SENDER_MEMORY_MB),
    ):
        assert deployment.function_property(function, "Timeout") == timeout
        assert deployment.function_property(function, "MemorySize") == memory
    events = {
        function: deployment.resolve(
            next(iter(deployment.resources[function]["Properties"]["Events"].values()))
        )["Properties"]
        for function in ("JobEventsFunction", "WebhookSenderFunction")
    }
    assert events["JobEventsFunction"]["BatchSize"] == event_sources.STREAM_BATCH_SIZE
    assert (
        events["JobEventsFunction"]["MaximumRecordAgeInSeconds"]
        == event_sources.STREAM_MAX_RECORD_AGE_S
    )
    assert events["WebhookSenderFunction"]["BatchSize"] == event_sources.QUEUE_BATCH_SIZE
