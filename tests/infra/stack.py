"""template.yaml as CloudFormation would deploy it, for tests to ask questions of.

A ``Deployment`` is the template with its parameters chosen (defaults plus overrides),
in one made-up account and region, with the intrinsic functions this template uses
(Ref, Fn::Sub, Fn::GetAtt, Fn::Join, Fn::If and its conditions) resolved to plain
values: bucket and table names, ARNs, each function's environment. ``translate``
runs the SAM transform the way CloudFormation does, so the IAM roles, permissions,
S3 notifications and API routes SAM generates can be checked too.

Hand-written because no maintained library resolves CloudFormation intrinsics
offline: cfn-lint and samtranslator only resolve what they each need internally.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "spectrum-mastering"
# What CloudFormation would name the resources the template leaves unnamed.
GENERATED_NAMES = {"JobsTable": f"{STACK}-JobsTable-1A2B3C4D5E6F", "HttpApi": "a1b2c3d4e5"}
# The label DynamoDB gives a table's stream when it is created.
STREAM_LABEL = "2026-01-01T00:00:00.000"

PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}


class _NoValue:
    """AWS::NoValue: the property is left out."""


NO_VALUE = _NoValue()


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain JSON types (cfn-lint's loader understands the ! tags)."""
    from cfnlint.decode import cfn_yaml

    template: dict[str, Any] = json.loads(json.dumps(cfn_yaml.load(str(path))))
    return template


def parameter_values(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        value = overrides.get(name, spec.get("Default"))
        if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
            value = [item.strip() for item in value.split(",")]
        values[name] = value
    unknown = set(overrides) - set(values)
    assert not unknown, f"not parameters of the template: {sorted(unknown)}"
    return values


@dataclass
class Deployment:
    template: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters = parameter_values(self.template, self.overrides)

    # ------------------------------------------------------------ resources

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, Any]:
        return {name: res for name, res in self.resources.items() if res["Type"] == kind}

    def physical_name(self, logical_id: str) -> str:
        if logical_id in GENERATED_NAMES:
            return GENERATED_NAMES[logical_id]
        props = self.resources.get(logical_id, {}).get("Properties", {})
        for key in ("BucketName", "FunctionName", "TableName", "LogGroupName", "QueueName", "Name"):
            if key in props:
                return str(self.resolve(props[key]))
        return logical_id

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        if kind == "AWS::S3::Bucket":
            return f"arn:{PARTITION}:s3:::{name}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        if kind == "AWS::Logs::LogGroup":
            return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
        if kind == "AWS::SQS::Queue":
            return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}"
        raise AssertionError(f"no ARN known for {logical_id} ({kind})")

    def queue_url(self, logical_id: str) -> str:
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.physical_name(logical_id)}"

    def _attribute(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical_id)
        if (
            attribute == "StreamArn"
            and self.resources[logical_id]["Type"] == "AWS::DynamoDB::Table"
        ):
            return f"{self.arn(logical_id)}/stream/{STREAM_LABEL}"
        raise AssertionError(f"GetAtt {logical_id}.{attribute} is not modelled")

    # ------------------------------------------------------------ intrinsics

    def condition(self, name: str) -> bool:
        return bool(self._condition(self.template["Conditions"][name]))

    def _condition(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, value),) = node.items()
            if key == "Fn::Equals":
                left, right = (self.resolve(v) for v in value)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._condition(value[0])
            if key == "Fn::And":
                return all(self._condition(v) for v in value)
            if key == "Fn::Or":
                return any(self._condition(v) for v in value)
            if key == "Condition":
                return self.condition(value)
        return self.resolve(node)

    def resolve(self, node: Any) -> Any:
        """``node`` with every intrinsic function replaced by its value."""
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self._ref(value)
            if key == "Fn::Sub":
                return self._sub(value)
            if key == "Fn::GetAtt":
                logical_id, attribute = value if isinstance(value, list) else value.split(".", 1)
                return self._attribute(logical_id, attribute)
            if key == "Fn::Join":
                delimiter, items = value
                return delimiter.join(str(item) for item in self.resolve(items))
            if key == "Fn::If":
                name, when_true, when_false = value
                return self.resolve(when_true if self.condition(name) else when_false)
            if key.startswith("Fn::"):
                raise AssertionError(f"{key} is not modelled")
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            kind = self.resources[name]["Type"]
            if kind == "AWS::SQS::Queue":
                return self.queue_url(name)
            return self.physical_name(name)
        raise AssertionError(f"Ref to unknown {name}")

    def _sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else value
        variables = {key: self.resolve(v) for key, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                logical_id, attribute = name.split(".", 1)
                return self._attribute(logical_id, attribute)
            resolved = self._ref(name)
            assert isinstance(resolved, (str, int, float)), f"${{{name}}} is not a scalar"
            return str(resolved)

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, text)

    # ------------------------------------------------------------ functions

    def functions(self) -> list[str]:
        return list(self.of_type("AWS::Serverless::Function"))

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """What Lambda puts in the function's environment from the template: Globals,
        then the function's own variables."""
        merged: dict[str, Any] = {}
        globals_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {})
        merged.update(globals_env.get("Variables", {}))
        own = self.resources[logical_id]["Properties"].get("Environment", {})
        merged.update(own.get("Variables", {}))
        return {name: str(self.resolve(value)) for name, value in merged.items()}

    def function_property(self, logical_id: str, name: str) -> Any:
        props = self.resources[logical_id]["Properties"]
        if name in props:
            return self.resolve(props[name])
        return self.resolve(self.template.get("Globals", {}).get("Function", {}).get(name))

    # ------------------------------------------------------------ SAM transform

    def translate(self) -> Deployment:
        """The template after the SAM transform, resolved with the same parameters."""
        from samtranslator.translator.transform import transform

        doc = copy.deepcopy(self.template)
        for res in doc["Resources"].values():
            props = res.get("Properties", {})
            # The transform wants deployable locations; `sam build` would put S3/ECR ones here.
            if res["Type"] == "AWS::Serverless::Function":
                if props.get("PackageType") == "Image":
                    props["ImageUri"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/repo:tag"
                else:
                    props["CodeUri"] = "s3://bucket/code.zip"
            elif res["Type"] == "AWS::Serverless::LayerVersion":
                props["ContentUri"] = "s3://bucket/layer.zip"

        class NoManagedPolicies:
            # Only consulted for policy names given as bare strings; the template has none.
            def load(self) -> dict[str, str]:
                return {}

        # As CloudFormation hands them to the transform: a CommaDelimitedList as a list.
        translated: dict[str, Any] = transform(doc, dict(self.overrides), NoManagedPolicies())
        return Deployment(translated, self.overrides)


# ---------------------------------------------------------------- IAM


@dataclass(frozen=True)
class Grant:
    """One Allow statement of a role, resolved."""

    role: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, action: str, resource: str) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in self.actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in self.resources
        )


def role_grants(translated: Deployment, role: str) -> list[Grant]:
    """The Allow statements of a role's inline policies (SAM puts each function's
    ``Policies`` and the grants it adds for event destinations there)."""
    grants = []
    props = translated.resources[role]["Properties"]
    for policy in props.get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            statement = translated.resolve(statement)
            assert not {"NotAction", "NotResource", "Condition"} & set(statement), statement
            if statement["Effect"] != "Allow":
                continue
            actions = statement["Action"]
            targets = statement["Resource"]
            grants.append(
                Grant(
                    role=role,
                    actions=tuple(actions if isinstance(actions, list) else [actions]),
                    resources=tuple(targets if isinstance(targets, list) else [targets]),
                )
            )
    return grants


def function_role(translated: Deployment, function: str) -> str:
    role = translated.resources[function]["Properties"]["Role"]
    assert role == {"Fn::GetAtt": [f"{function}Role", "Arn"]}, role
    return f"{function}Role"
