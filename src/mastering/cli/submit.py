"""``mastering submit``: run one job through the HTTP API, as the Spectrum app does.

Create the job, upload each file with its presigned POST, poll the job with a
progress bar, download the results. Only HTTP: it works the same against the
local stack and against a deployed API (the smoke test after ``sam deploy``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastering.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    FORMAT_CHOICES,
    CliError,
    HelpFormatter,
    add_mastering_arguments,
    add_track_arguments,
    chosen_preset,
    env_default,
    exit_code_of,
    format_metrics,
    format_warnings,
    input_file,
    options_body,
    positive_float,
    requested_options,
    result_name,
)
from mastering.cli.progress import ProgressBar
from mastering.devstack import defaults
from mastering.errors import ErrorCode, error_from_code
from mastering.formats import INPUT_CONTENT_TYPES, INPUT_EXTENSIONS, OutputFormat
from mastering.jobs.model import JobStatus
from mastering.options import RequestedOptions
from mastering.presets import Preset

if TYPE_CHECKING:
    import requests

EXAMPLES = """\
examples:
  mastering submit song.wav --preset balanced
  mastering submit song.wav --preset Bright --loudness apple_music --true-peak -1.5
  mastering submit song.flac --reference ref.mp3 --format wav24 --format mp3 -o out/
  mastering submit song.wav --reference ref.wav --intensity 0.5 --loudness -14
  mastering submit song.wav --preset loud --api https://abc.execute-api.us-east-1.amazonaws.com \\
      --api-key "$API_KEY"
"""

POLL_INTERVAL_S = 1.0
# Consecutive failed polls (network hiccups, 5xx) tolerated before giving up.
MAX_POLL_FAILURES = 5
_HTTP_TIMEOUT_S = 30.0
_TRANSFER_TIMEOUT_S = (10.0, 600.0)
_CHUNK = 1024 * 1024

# The first content type listed for each kind is its usual name.
_CONTENT_TYPE_OF_KIND = {kind: ctype for ctype, kind in reversed(INPUT_CONTENT_TYPES.items())}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "submit",
        help="master a file through the HTTP API (local stack or deployed)",
        description=(
            "Create a job on the HTTP API, upload the files with their presigned POSTs,\n"
            "follow its progress and download the results. Give a reference track or a\n"
            "preset (GET /presets lists them), and optionally the mastering options.\n"
            "Prints each result's loudness and true peak, and the job's warnings."
        ),
        epilog=f"{EXAMPLES}\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    add_track_arguments(parser)
    parser.add_argument(
        "-o", "--output-dir", type=Path, default=Path(), help="where the results are written"
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMAT_CHOICES,
        help="result format; repeat for several (default: wav16)",
    )
    parser.add_argument(
        "--api",
        default=env_default(defaults.ENV_API_URL, defaults.API_URL),
        help=f"base URL of the HTTP API (env {defaults.ENV_API_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the API key (default: ${defaults.ENV_API_KEY}, else {defaults.API_KEY})",
    )
    parser.add_argument("--owner", default=None, help="end-user id sent as X-Owner-Id")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=1800.0,
        help="seconds to wait for the job to finish",
    )
    add_mastering_arguments(parser)
    parser.set_defaults(run=run)


def content_type_for(path: Path) -> str:
    """The content type a browser would send for this file (the API checks it)."""
    kind = INPUT_EXTENSIONS.get(path.suffix.lower().lstrip("."))
    return _CONTENT_TYPE_OF_KIND[kind] if kind is not None else "application/octet-stream"


def _describe_error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("code"):
            return f"{error['code']}: {error.get('message', '')} (HTTP {response.status_code})"
        if body.get("message"):
            return f"{body['message']} (HTTP {response.status_code})"
    return f"HTTP {response.status_code} {response.reason}"


def _s3_error(response: requests.Response) -> str:
    # S3 answers errors in XML; the Code and Message elements say it all.
    code = re.search(r"<Code>([^<]*)</Code>", response.text)
    message = re.search(r"<Message>([^<]*)</Message>", response.text)
    if code or message:
        return " ".join(part for part in (code and code[1] + ":", message and message[1]) if part)
    return f"HTTP {response.status_code} {response.reason}"


class ApiClient:
    """The few calls a client of the HTTP API makes."""

    def __init__(self, base_url: str, api_key: str, owner: str | None) -> None:
        import requests

        self._requests = requests
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["X-Api-Key"] = api_key
        self._session.headers["User-Agent"] = "mastering-cli"
        if owner:
            self._session.headers["X-Owner-Id"] = owner

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, json=body, timeout=_HTTP_TIMEOUT_S)
        except self._requests.ConnectionError:
            raise CliError(
                f"cannot reach the API at {self.base_url} (is `mastering serve` running, "
                "or is --api right?)"
            ) from None
        except self._requests.RequestException as error:
            raise CliError(f"{method} {path} failed: {error}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _describe_error(response))
        try:
            data = response.json()
        except ValueError:
            raise CliError(
                f"{method} {path}: the API answered HTTP {response.status_code} with "
                "something that is not JSON (is --api the API's base URL?)"
            ) from None
        if not isinstance(data, dict):
            raise CliError(f"{method} {path}: unexpected answer from the API")
        return data

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs", body)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def upload(self, upload: dict[str, Any], path: Path, content_type: str) -> None:
        """What a browser does with a presigned POST: the form fields, then the file."""
        try:
            with path.open("rb") as handle:
                response = self._requests.post(
                    upload["url"],
                    data=upload["fields"],
                    files={"file": (path.name, handle, content_type)},
                    timeout=_TRANSFER_TIMEOUT_S,
                )
        except self._requests.RequestException as error:
            raise CliError(f"uploading {path.name} failed: {error}") from None
        if response.status_code >= 300:
            raise CliError(f"uploading {path.name} was refused: {_s3_error(response)}")

    def download(self, url: str, dest: Path) -> int:
        """Stream ``url`` to ``dest``; a partial file never takes ``dest``'s name."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        size = 0
        try:
            with (
                partial.open("xb") as sink,
                self._requests.get(url, stream=True, timeout=_TRANSFER_TIMEOUT_S) as resp,
            ):
                if resp.status_code != 200:
                    raise CliError(f"downloading {dest.name} failed: {_s3_error(resp)}")
                for chunk in resp.iter_content(_CHUNK):
                    sink.write(chunk)
                    size += len(chunk)
            os.replace(partial, dest)
        except self._requests.RequestException as error:
            raise CliError(f"downloading {dest.name} failed: {error}") from None
        finally:
            partial.unlink(missing_ok=True)
        return size


class ApiError(CliError):
    def __init__(self, status: int, message: str) -> None:
        # A 4xx is the request refused (bad input, a wrong key), except "try again later".
        refused = 400 <= status < 500 and status not in (408, 429)
        super().__init__(message, EXIT_USAGE if refused else EXIT_FAILED)
        self.status = status


def _declare(path: Path) -> dict[str, Any]:
    return {
        "filename": path.name,
        "size": path.stat().st_size,
        "content_type": content_type_for(path),
    }


def job_body(
    target: Path,
    reference: Path | None,
    preset: Preset | None,
    formats: list[OutputFormat],
    requested: RequestedOptions,
) -> dict[str, Any]:
    """The POST /jobs body: the files as declared, the outputs, and the options given."""
    body: dict[str, Any] = {"target": _declare(target), "outputs": [str(f) for f in formats]}
    if reference is not None:
        body["reference"] = _declare(reference)
    elif preset is not None:
        body["preset"] = preset.id
    mastering = options_body(requested)
    if mastering:
        body["mastering"] = mastering
    return body


def _wait(client: ApiClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    failures = 0
    job: dict[str, Any] = {}
    with ProgressBar() as bar:
        while True:
            try:
                job = client.get_job(job_id)
                failures = 0
            except ApiError as error:
                if error.status < 500:
                    raise
                failures += 1
            except CliError:
                failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise CliError(f"lost contact with the API while job {job_id} was running")
            if job:
                progress = job.get("progress") or {}
                bar.update(
                    str(progress.get("stage", job.get("status", ""))), progress.get("percent", 0)
                )
                if _is_terminal(str(job.get("status"))):
                    return job
            if time.monotonic() >= deadline:
                raise CliError(
                    f"gave up after {timeout_s:g} s: job {job_id} is still "
                    f"{job.get('status', 'unknown')} (GET /jobs/{job_id} shows it later)"
                )
            time.sleep(POLL_INTERVAL_S)


def _is_terminal(status: str) -> bool:
    try:
        return JobStatus(status).is_terminal
    except ValueError:
        raise CliError(f"the API reported an unknown job status {status!r}") from None


def _failed_job_exit_code(code: str, message: str) -> int:
    """2 when the job failed on its input (bad audio, ...), 1 when the service failed."""
    error = error_from_code(code, message)
    # This command did the uploads: an upload the service never saw is not the input's fault.
    if error.code in (ErrorCode.UPLOAD_MISSING, ErrorCode.UPLOAD_EXPIRED):
        return EXIT_FAILED
    return exit_code_of(error)


def _job_warnings(job: dict[str, Any]) -> list[dict[str, Any]]:
    warnings = job.get("warnings") or []
    return [w for w in warnings if isinstance(w, dict)] if isinstance(warnings, list) else []


def run(args: argparse.Namespace) -> int:
    preset = chosen_preset(args)
    requested = requested_options(args)
    target = input_file(args.target, "target")
    reference = input_file(args.reference, "reference") if args.reference else None
    formats = [OutputFormat(fmt) for fmt in dict.fromkeys(args.formats or ["wav16"])]
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise CliError(f"the output directory is a file: {args.output_dir}", EXIT_USAGE)

    api_key = args.api_key or env_default(defaults.ENV_API_KEY, defaults.API_KEY)
    client = ApiClient(args.api, api_key, args.owner)
    try:
        body = job_body(target, reference, preset, formats, requested)
        created = client.create_job(body)
        job_id = str(created["job_id"])
        print(f"job {job_id} created at {client.base_url}", file=sys.stderr)
        files = {"target": target, "reference": reference}
        for role, upload in created.get("uploads", {}).items():
            path = files.get(role)
            if path is None:
                raise CliError(f"the API asked for an upload this job has no file for: {role}")
            client.upload(upload, path, body[role]["content_type"])
        job = _wait(client, job_id, args.timeout)
        status = job.get("status")
        if status != str(JobStatus.SUCCEEDED):
            error = job.get("error") or {}
            code = str(error.get("code", status))
            message = str(error.get("message", "no reason given"))
            print(f"job {job_id} {status}: {code}: {message}", file=sys.stderr)
            return _failed_job_exit_code(code, message)
        results = job.get("results") or {}
        for fmt in formats:
            result = results.get(str(fmt))
            if not result:
                raise CliError(f"job {job_id} succeeded but has no {fmt} result")
            dest = args.output_dir / result_name(target, fmt)
            client.download(result["url"], dest)
            print(f"{fmt:6} {dest}")
        per_file = {str(fmt): results[str(fmt)] for fmt in formats}
        print(format_metrics(job.get("metrics") or {}, files=per_file))
        for line in format_warnings("submit", _job_warnings(job)):
            print(line, file=sys.stderr)
        return EXIT_OK
    finally:
        client.close()
