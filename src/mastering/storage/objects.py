"""Object storage: the only module that talks to S3."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from botocore.exceptions import ClientError

from mastering import clients
from mastering.config import AwsSettings
from mastering.errors import FileTooLarge, UploadMissing
from mastering.jobs.model import Job
from mastering.storage.keys import upload_key

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    # S3's ETag without its quotes: the MD5 of the bytes for a single-part upload
    # (every presigned POST) in a bucket encrypted with SSE-S3 or not at all.
    etag: str | None = None


class ObjectStorage(Protocol):
    """The port the domain uses; ``S3Storage`` is the adapter, tests may fake it."""

    def presign_post(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_s: int,
        now: datetime,
    ) -> PresignedPost: ...

    def presign_get(
        self, bucket: str, key: str, *, expires_s: int, download_name: str, content_type: str
    ) -> str: ...

    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def download(self, bucket: str, key: str, dest: Path, *, max_bytes: int) -> str: ...

    def read_bytes(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None: ...

    def upload(self, bucket: str, key: str, source: Path, *, content_type: str) -> int: ...

    def write_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None: ...

    def delete(self, bucket: str, keys: list[str]) -> None: ...

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many there were."""
        ...


def _is_missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    def __init__(self, aws: AwsSettings) -> None:
        self._aws = aws

    def _s3(self) -> Any:
        return clients.s3_client(self._aws)

    def _presigner(self) -> Any:
        return clients.s3_presign_client(self._aws)

    def presign_post(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_s: int,
        now: datetime,
    ) -> PresignedPost:
        # The policy pins the exact key, the byte range and the content type, so a
        # leaked form can only ever write this one object of this size and type.
        post: dict[str, Any] = self._presigner().generate_presigned_post(
            Bucket=bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_s,
        )
        return PresignedPost(
            url=str(post["url"]),
            fields={name: str(value) for name, value in post["fields"].items()},
            expires_at=now + timedelta(seconds=expires_s),
        )

    def presign_get(
        self, bucket: str, key: str, *, expires_s: int, download_name: str, content_type: str
    ) -> str:
        disposition = f"attachment; filename*=UTF-8''{quote(download_name)}"
        return str(
            self._presigner().generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": bucket,
                    "Key": key,
                    "ResponseContentDisposition": disposition,
                    "ResponseContentType": content_type,
                },
                ExpiresIn=expires_s,
            )
        )

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            response = self._s3().head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        etag = response.get("ETag")
        return ObjectInfo(
            size=int(response["ContentLength"]),
            content_type=response.get("ContentType"),
            etag=etag.strip('"') if etag else None,
        )

    def download(self, bucket: str, key: str, dest: Path, *, max_bytes: int) -> str:
        """Stream an object to ``dest`` and return its SHA-256.

        Stops at ``max_bytes`` even if the object grew after it was checked.
        """
        try:
            response = self._s3().get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                raise UploadMissing("An uploaded file is no longer available") from error
            raise
        digest = hashlib.sha256()
        written = 0
        body = response["Body"]
        try:
            with dest.open("wb") as sink:
                for chunk in body.iter_chunks(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise FileTooLarge("The uploaded file is larger than allowed")
                    digest.update(chunk)
                    sink.write(chunk)
        finally:
            body.close()
        return digest.hexdigest()

    def read_bytes(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        """A small object's bytes, or None when it does not exist or exceeds ``max_bytes``."""
        try:
            response = self._s3().get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > max_bytes:
                return None
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        return bytes(data) if len(data) <= max_bytes else None

    def write_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        self._s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def upload(self, bucket: str, key: str, source: Path, *, content_type: str) -> int:
        self._s3().upload_file(str(source), bucket, key, ExtraArgs={"ContentType": content_type})
        return source.stat().st_size

    def delete(self, bucket: str, keys: list[str]) -> None:
        # Deleting named keys needs no s3:ListBucket on the results bucket.
        if keys:
            self._s3().delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        deleted = 0
        paginator = self._s3().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys = [str(entry["Key"]) for entry in page.get("Contents", [])]
            self.delete(bucket, keys)
            deleted += len(keys)
        return deleted


def uploads_arrived(job: Job, storage: ObjectStorage, bucket: str) -> bool:
    """Whether every file the job needs is in the uploads bucket."""
    return all(
        storage.head(bucket, upload_key(job.job_id, role)) is not None
        for role in job.required_roles
    )
