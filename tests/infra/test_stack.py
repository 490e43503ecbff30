"""What the stack guarantees by configuration alone, read from template.yaml as
CloudFormation would deploy it (parameters chosen, intrinsics resolved, SAM's
transform applied; see ``stack.py``). What the functions do with it is
``test_functions_as_deployed.py``.
"""

from __future__ import annotations

import ast
import fnmatch
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
