"""One Lambda function as a warm container: a process that imports the handler once
and invokes it for each event it is sent, recording what the code asks of AWS.

Run by ``tests/infra/deployed.py`` as
``python lambda_driver.py CODE_DIR MODULE.FUNCTION RECORD_FILE`` (the template's
handler, e.g. ``app.handler``) with exactly the environment
the template gives the function. Protocol: one JSON request per line on stdin,
``{"event": {...}, "remaining_s": N}`` or ``{"routes": true}``; one JSON answer per
line on the original stdout. Everything the code prints goes to stderr.

Recorded, one JSON line each in RECORD_FILE (appended, so forked children record too):

* ``{"env": NAME}``: each environment variable the code looks up;
* ``{"call": "s3:HeadObject", "params": {...}, "error": CODE|null}``: each AWS API call;
* ``{"presign": "s3:PutObject", "params": {...}}``: each presigned URL or POST, which
  carries the authority of the function's role.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

RECORDED_PARAMS = ("Bucket", "Key", "TableName", "IndexName", "Name", "Prefix", "QueueUrl")


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, entry: dict[str, Any]) -> None:
        # One write per line, append mode: lines from a forked child never interleave.
        with open(self.path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(entry) + "\n")


class RecordingEnviron(MutableMapping[str, str]):
    """os.environ that notes every name looked up (iteration is not a lookup)."""

    def __init__(self, real: MutableMapping[str, str], recorder: Recorder) -> None:
        self._real = real
        self._recorder = recorder
        self._seen: set[str] = set()

    def _note(self, name: object) -> None:
        if isinstance(name, str) and name not in self._seen:
            self._seen.add(name)
            self._recorder.write({"env": name})

    def __getitem__(self, name: str) -> str:
        self._note(name)
        return self._real[name]

    def __contains__(self, name: object) -> bool:
        self._note(name)
        return name in self._real

    def get(self, name: str, default: Any = None) -> Any:
        self._note(name)
        return self._real.get(name, default)

    def __setitem__(self, name: str, value: str) -> None:
        self._real[name] = value

    def __delitem__(self, name: str) -> None:
        del self._real[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    # Copying the whole environment (e.g. for a child process) reads no name in
    # particular, so these bypass the record.
    def copy(self) -> dict[str, str]:
        return dict(self._real)

    def keys(self) -> Any:
        return self._real.keys()

    def items(self) -> Any:
        return self._real.items()

    def values(self) -> Any:
        return self._real.values()


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {key: params[key] for key in RECORDED_PARAMS if key in params}


def install(recorder: Recorder) -> None:
    # Replaced, not cleared: the real environment stays underneath, lookups are noted.
    os.environ = RecordingEnviron(os.environ, recorder)  # type: ignore[assignment]  # noqa: B003

    import botocore.client
    import botocore.signers
    from botocore.exceptions import ClientError

    original_call = getattr(botocore.client.BaseClient, "_make_api_call")  # noqa: B009

    def recording_call(self: Any, operation: str, api_params: dict[str, Any]) -> Any:
        service = self.meta.service_model.endpoint_prefix
        entry: dict[str, Any] = {"call": f"{service}:{operation}", "params": _params(api_params)}
        if operation == "TransactWriteItems":
            entry["items"] = [
                {"kind": kind, "TableName": body.get("TableName")}
                for item in api_params.get("TransactItems", [])
                for kind, body in item.items()
            ]
        if operation == "DeleteObjects":
            entry["keys"] = [o["Key"] for o in api_params.get("Delete", {}).get("Objects", [])]
        try:
            result = original_call(self, operation, api_params)
        except ClientError as error:
            entry["error"] = str(error.response.get("Error", {}).get("Code"))
            recorder.write(entry)
            raise
        entry["error"] = None
        recorder.write(entry)
        return result

    setattr(botocore.client.BaseClient, "_make_api_call", recording_call)  # noqa: B010

    original_url = botocore.signers.generate_presigned_url
    original_post = botocore.signers.generate_presigned_post

    def recording_url(self: Any, ClientMethod: str, Params: Any = None, **kwargs: Any) -> Any:
        operation = self._PY_TO_OP_NAME.get(ClientMethod, ClientMethod)
        recorder.write({"presign": f"s3:{operation}", "params": _params(Params or {})})
        return original_url(self, ClientMethod, Params, **kwargs)

    def recording_post(self: Any, Bucket: str, Key: str, **kwargs: Any) -> Any:
        recorder.write({"presign": "s3:PutObject", "params": {"Bucket": Bucket, "Key": Key}})
        return original_post(self, Bucket, Key, **kwargs)

    # botocore attaches these to each S3 client class when it is first created, reading
    # the module attributes then: patched before any client exists, they are used.
    setattr(botocore.signers, "generate_presigned_url", recording_url)  # noqa: B010
    setattr(botocore.signers, "generate_presigned_post", recording_post)  # noqa: B010


class Context:
    """What Powertools and the handlers read from a Lambda context."""

    def __init__(self, name: str, remaining_s: float) -> None:
        self._deadline = time.monotonic() + remaining_s
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 3008
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = "11111111-2222-3333-4444-555555555555"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "infra-test"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    code_dir, handler_name, record_path = sys.argv[1:4]
    module_name, _, function_name = handler_name.rpartition(".")
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    install(Recorder(record_path))
    sys.path.insert(0, code_dir)
    module = importlib.import_module(module_name)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("routes"):
            app = module.app
            # Powertools keeps its routes here; its public get_openapi_schema() cannot
            # read handlers written with `from __future__ import annotations`.
            routes = [[r.method, r.path] for r in app._static_routes + app._dynamic_routes]
            answers.write(json.dumps({"routes": routes}) + "\n")
            continue
        context = Context(module_name, float(request.get("remaining_s", 300)))
        try:
            result = getattr(module, function_name)(request["event"], context)
        except Exception as error:  # the test reports it; the driver keeps serving
            answers.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        else:
            answers.write(json.dumps({"result": result}, default=str) + "\n")


if __name__ == "__main__":
    main()
