"""The reference-profile cache on its own, with the in-memory storage fake."""

from __future__ import annotations

import pytest

from mastering.engine.params import SPECTRUM_BINS
from mastering.engine.profile import ReferenceProfile
from mastering.storage.objects import ObjectInfo
from mastering.worker.profile_cache import ProfileCache, content_id
from tests.fakes import FakeStorage

MD5 = "9e107d9d372bb6826bd81d3542a419d6"


def _profile(match_rms: float = 0.2) -> ReferenceProfile:
    return ReferenceProfile(
        mid_spectrum=(0.5,) * SPECTRUM_BINS,
        side_spectrum=(0.1,) * SPECTRUM_BINS,
        match_rms=match_rms,
        amplitude_coefficient=1.0,
        sample_rate=44_100,
        channels=2,
        frames=441_000,
        lufs=-9.5,
        peak=0.98,
        fingerprint="f" * 64,
    )


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        (MD5, f"{MD5}-1000"),
        (MD5.upper(), f"{MD5}-1000"),
        (f"{MD5}-3", f"{MD5}-3-1000"),  # multipart: still determined by the bytes
        (None, None),
        ("", None),
        ("not-an-md5", None),  # e.g. SSE-KMS: no content id, so never a cache hit
        ("../../results/x", None),
    ],
)
def test_content_id_comes_only_from_an_md5_like_etag(
    etag: str | None, expected: str | None
) -> None:
    assert content_id(ObjectInfo(size=1000, content_type=None, etag=etag)) == expected


def test_a_stored_profile_is_found_by_the_same_owner_and_bytes_only() -> None:
    # Given a profile stored for one owner's reference
    storage = FakeStorage()
    cache = ProfileCache(storage, "results")
    reference = ObjectInfo(size=1000, content_type=None, etag=MD5)
    assert cache.store("owner-a", reference, _profile())

    # Then the same owner and bytes find it, exactly
    assert cache.load("owner-a", reference) == _profile()
    # And another owner, another size or another engine version do not
    assert cache.load("owner-b", reference) is None
    assert cache.load("owner-a", ObjectInfo(size=1001, content_type=None, etag=MD5)) is None
    next_engine = ProfileCache(storage, "results", engine_version="next")
    assert next_engine.load("owner-a", reference) is None
    # And the entry lives under profiles/ in the results bucket
    ((bucket, key),) = storage.objects
    assert bucket == "results"
    assert key.startswith("profiles/")


def test_unusable_entries_and_storage_errors_are_misses() -> None:
    # Given an entry that is not a profile
    storage = FakeStorage()
    cache = ProfileCache(storage, "results")
    reference = ObjectInfo(size=1000, content_type=None, etag=MD5)
    cache.store("owner", reference, _profile())
    ((bucket, key),) = storage.objects
    storage.objects[(bucket, key)] = b"\x00garbage"

    # Then loading it is a miss, not an error
    assert cache.load("owner", reference) is None

    # And a storage that fails is a miss on read and a refusal on write, never a raise
    def broken(*_: object, **__: object) -> None:
        raise ConnectionError("S3 is unreachable")

    storage.read_bytes = broken  # type: ignore[method-assign,assignment]
    storage.write_bytes = broken  # type: ignore[method-assign]
    assert cache.load("owner", reference) is None
    assert cache.store("owner", reference, _profile()) is False


def test_an_upload_without_a_content_id_is_never_cached() -> None:
    storage = FakeStorage()
    cache = ProfileCache(storage, "results")
    opaque = ObjectInfo(size=1000, content_type=None, etag="kms-opaque-value")
    assert cache.store("owner", opaque, _profile()) is False
    assert cache.load("owner", opaque) is None
    assert storage.objects == {}
    assert storage.reads == []
