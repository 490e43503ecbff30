"""S3 object keys. The service picks every key; user file names never appear in one."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from mastering.formats import RESULT_SPECS, InputRole, ResultName

UPLOADS_PREFIX = "uploads/"
RESULTS_PREFIX = "results/"
PROFILES_PREFIX = "profiles/"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UPLOAD_KEY = re.compile(rf"^uploads/(?P<job_id>{_UUID})/(?P<role>target|reference)$")
_JOB_ID = re.compile(rf"^{_UUID}$")


@dataclass(frozen=True)
class UploadKey:
    job_id: str
    role: InputRole


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def uploads_prefix(job_id: str) -> str:
    return f"{UPLOADS_PREFIX}{job_id}/"


def upload_key(job_id: str, role: InputRole) -> str:
    return f"{uploads_prefix(job_id)}{role}"


def parse_upload_key(raw_key: str) -> UploadKey | None:
    """The job and role an uploaded object belongs to, or None for any other key.

    S3 event notifications URL-encode keys (spaces as '+'), so decode first.
    """
    match = _UPLOAD_KEY.match(unquote_plus(raw_key))
    if match is None:
        return None
    return UploadKey(job_id=match["job_id"], role=InputRole(match["role"]))


def results_prefix(job_id: str) -> str:
    return f"{RESULTS_PREFIX}{job_id}/"


def result_key(job_id: str, name: ResultName) -> str:
    return f"{results_prefix(job_id)}{RESULT_SPECS[name].object_name}"


def _engine_prefix(engine_version: str) -> str:
    # Hashed: the engine version is free text, kept out of the key's syntax.
    return f"{PROFILES_PREFIX}{hashlib.sha256(engine_version.encode()).hexdigest()[:16]}/"


def profile_key(*, engine_version: str, owner: str, content_id: str) -> str:
    """Where an owner's reference profile is cached in the results bucket."""
    scope = hashlib.sha256(owner.encode()).hexdigest()[:32]
    return f"{_engine_prefix(engine_version)}owners/{scope}/{content_id}.json"


def preset_profile_key(*, engine_version: str, preset_id: str) -> str:
    """Where a preset's profile is stored: the service renders presets, so one for all."""
    return f"{_engine_prefix(engine_version)}presets/{preset_id}.json"
