"""Steps of a job as a client and S3 take them, shared by the flow tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import requests

from tests.conftest import ApiClient, s3_event_for


def declare(path: Path, content_type: str = "audio/wav") -> dict[str, Any]:
    return {"filename": path.name, "size": path.stat().st_size, "content_type": content_type}


def post_upload(
    upload: dict[str, Any],
    filename: str,
    content: bytes | BinaryIO,
    content_type: str,
    *,
    timeout: float = 30,
) -> requests.Response:
    """What a browser does with a presigned POST: a multipart form, file last."""
    return requests.post(
        upload["url"],
        data=upload["fields"],
        files={"file": (filename, content, content_type)},
        timeout=timeout,
    )


def upload_file(upload: dict[str, Any], path: Path) -> requests.Response:
    """``post_upload`` of a file, with the content type the presigned form fixed."""
    with path.open("rb") as handle:
        return post_upload(upload, path.name, handle, upload["fields"]["Content-Type"])


def create_and_upload(
    api: ApiClient, target: Path, reference: Path | None, *, owner: str = "user-1", **extra: Any
) -> tuple[str, dict[str, int]]:
    body: dict[str, Any] = {"target": declare(target), **extra}
    if reference is not None:
        body["reference"] = declare(reference)
    created = api.call("POST", "/jobs", body=body, owner=owner)
    assert created.status == 201, created.body
    sizes = {}
    for role, path in (("target", target), ("reference", reference)):
        if path is None:
            continue
        response = upload_file(created.body["uploads"][role], path)
        assert response.status_code in (200, 201, 204), response.text
        sizes[role] = path.stat().st_size
    return created.body["job_id"], sizes


def deliver(invoke_master: Callable[..., Any], job_id: str, role: str, size: int) -> None:
    invoke_master(s3_event_for(f"uploads/{job_id}/{role}", size))
