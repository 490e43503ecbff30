"""Reference profiles cached in the results bucket, found without reading the reference.

Users master many tracks against the same reference, and the reference's download
and analysis are a large share of a job. A cached profile is keyed by what S3 already
knows about the uploaded reference before a single byte is read: its ETag (the MD5 of
the bytes; every upload is a single-part presigned POST into an SSE-S3 bucket) and its
size. So a second job with the same reference file skips both the download and the
analysis.

Why the cache is per owner: MD5 collisions can be crafted, so a shared cache would let
one account plant a profile under the hash of a popular reference that others then
master against. Scoped to the owner, a collision can only ever affect its own author.

Why an ETag that is not an MD5 is still safe to use: under SSE-KMS or for a multipart
upload S3 returns an opaque per-upload or per-part-layout value; such a key simply
never matches another upload, so the cache misses and nothing is wrong.

Presets are stored profiles too, under one key per preset and engine version: the
service renders them, so there is nothing to scope, and a preset job after the first
skips rendering and analysing it.

The cache is best effort: any failure to read or write it is logged and the job goes
on as if there were no cache.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from mastering.engine.profile import ProfileError, ReferenceProfile
from mastering.storage.keys import preset_profile_key, profile_key
from mastering.storage.objects import ObjectInfo, ObjectStorage
from mastering.versions import ENGINE_VERSION

logger = logging.getLogger(__name__)

# A profile is about 45 KB of JSON; anything much larger is not one of ours.
MAX_PROFILE_BYTES: Final = 1024 * 1024
PROFILE_CONTENT_TYPE: Final = "application/json"
# A plain MD5 ETag, or S3's multipart form "<md5 of part md5s>-<parts>".
_CONTENT_ETAG = re.compile(r"^[0-9a-f]{32}(-[0-9]{1,5})?$")


def content_id(info: ObjectInfo) -> str | None:
    """An id of an uploaded object's bytes from its HEAD, or None if S3 gave none usable."""
    if info.etag is None or not _CONTENT_ETAG.match(info.etag.lower()):
        return None
    return f"{info.etag.lower()}-{info.size}"


@dataclass(frozen=True)
class ProfileCache:
    storage: ObjectStorage
    bucket: str
    engine_version: str = ENGINE_VERSION

    def _key(self, owner: str, reference: ObjectInfo) -> str | None:
        identity = content_id(reference)
        if identity is None:
            return None
        return profile_key(engine_version=self.engine_version, owner=owner, content_id=identity)

    def load(self, owner: str, reference: ObjectInfo) -> ReferenceProfile | None:
        return self._read(self._key(owner, reference))

    def store(self, owner: str, reference: ObjectInfo, profile: ReferenceProfile) -> bool:
        return self._write(self._key(owner, reference), profile)

    def load_preset(self, preset_id: str) -> ReferenceProfile | None:
        """A preset's stored profile (rendering and analysing one takes about 0.2 s)."""
        return self._read(
            preset_profile_key(engine_version=self.engine_version, preset_id=preset_id)
        )

    def store_preset(self, preset_id: str, profile: ReferenceProfile) -> bool:
        key = preset_profile_key(engine_version=self.engine_version, preset_id=preset_id)
        return self._write(key, profile)

    def _read(self, key: str | None) -> ReferenceProfile | None:
        if key is None:
            return None
        try:
            data = self.storage.read_bytes(self.bucket, key, max_bytes=MAX_PROFILE_BYTES)
            if data is None:
                return None
            profile = ReferenceProfile.from_bytes(data)
        except ProfileError as error:
            # Another engine version's or a damaged entry: analyse again and overwrite.
            logger.warning("ignoring an unusable cached profile", extra={"reason": str(error)})
            return None
        except Exception:
            logger.exception("could not read the profile cache", extra={"key": key})
            return None
        if profile.engine_version != self.engine_version:
            return None
        return profile

    def _write(self, key: str | None, profile: ReferenceProfile) -> bool:
        if key is None:
            return False
        try:
            self.storage.write_bytes(
                self.bucket, key, profile.to_bytes(), content_type=PROFILE_CONTENT_TYPE
            )
        except Exception:
            logger.exception("could not write the profile cache", extra={"key": key})
            return False
        return True
