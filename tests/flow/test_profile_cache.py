"""Reference profiles cached in the results bucket: a reference an owner has used before
is neither downloaded nor analysed again. Reads are counted on the S3 client itself
(botocore events), so the count is what S3 would bill, not what our code believes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio_factory import tone_mix, write_wav
from tests.conftest import ApiClient, Stack, emulated_s3, function_settings
from tests.jobflow import create_and_upload, deliver

RATE = 44_100

pytestmark = pytest.mark.slow


class S3Calls:
    """Every S3 call the functions make, as (operation, key)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls.append((model.name, str(params.get("Key", ""))))

    def gets(self, key_part: str) -> list[str]:
        return [key for op, key in self.calls if op == "GetObject" and key_part in key]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def s3_calls(stack: Stack) -> Iterator[S3Calls]:
    calls = S3Calls()
    events = emulated_s3().meta.events
    events.register("before-parameter-build.s3", calls.record)
    yield calls
    events.unregister("before-parameter-build.s3", calls.record)


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[[str, int, float], Path]:
    def make(name: str, seed: int, peak_dbfs: float) -> Path:
        samples = tone_mix(6.0, RATE, seed=seed, peak_dbfs=peak_dbfs)
        return write_wav(tmp_path / name, samples, RATE)

    return make


def _refuse_analysis(*_: Any, **__: Any) -> Any:
    raise RuntimeError("the reference was analysed again")


def _master(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    target: Path,
    reference: Path,
    owner: str = "user-1",
) -> dict[str, Any]:
    job_id, sizes = create_and_upload(api, target, reference, owner=owner, outputs=["wav16"])
    deliver(invoke_master, job_id, "target", sizes["target"])
    deliver(invoke_master, job_id, "reference", sizes["reference"])
    job: dict[str, Any] = api.call("GET", f"/jobs/{job_id}", owner=owner).body
    return job


def _profiles() -> list[str]:
    s3 = emulated_s3()
    listing = s3.list_objects_v2(Bucket=function_settings().results_bucket, Prefix="profiles/")
    return [obj["Key"] for obj in listing.get("Contents", [])]


def test_second_job_with_the_same_reference_skips_its_download_and_analysis(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    s3_calls: S3Calls,
    make_wav: Callable[[str, int, float], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a first job mastered against a reference
    reference = make_wav("reference.wav", 2, -1.0)
    first = _master(api, invoke_master, make_wav("one.wav", 1, -18.0), reference)
    assert first["status"] == "succeeded", first["error"]
    assert len(s3_calls.gets("/reference")) == 1
    assert len(_profiles()) == 1

    # When the same owner masters another track against the same reference file,
    # with analysis of reference files made impossible
    s3_calls.clear()
    import mastering.pipeline

    monkeypatch.setattr(mastering.pipeline, "analyze_file", _refuse_analysis)
    second = _master(api, invoke_master, make_wav("two.wav", 3, -20.0), reference)

    # Then it succeeds with the same reference loudness, having read only the target
    # and the cached profile: the reference upload was never downloaded
    assert second["status"] == "succeeded", second["error"]
    assert second["metrics"]["reference_lufs"] == first["metrics"]["reference_lufs"]
    assert s3_calls.gets("/reference") == []
    assert len(s3_calls.gets("/target")) == 1
    assert len(s3_calls.gets("profiles/")) == 1
    assert len(_profiles()) == 1


def test_another_owner_does_not_get_a_cached_profile(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    s3_calls: S3Calls,
    make_wav: Callable[[str, int, float], Path],
) -> None:
    # Given a reference profiled for one owner
    reference = make_wav("reference.wav", 2, -1.0)
    first = _master(api, invoke_master, make_wav("one.wav", 1, -18.0), reference, "user-1")
    assert first["status"] == "succeeded", first["error"]

    # When someone else masters against a file with the same bytes
    s3_calls.clear()
    other = _master(api, invoke_master, make_wav("two.wav", 3, -18.0), reference, "user-2")

    # Then their job downloads and analyses it itself (a crafted MD5 collision in one
    # account can never steer another account's masters), and caches its own profile
    assert other["status"] == "succeeded", other["error"]
    assert len(s3_calls.gets("/reference")) == 1
    assert len(_profiles()) == 2


def test_a_damaged_cache_entry_is_analysed_again_and_replaced(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    s3_calls: S3Calls,
    make_wav: Callable[[str, int, float], Path],
) -> None:
    # Given a cached profile that has been damaged
    reference = make_wav("reference.wav", 2, -1.0)
    first = _master(api, invoke_master, make_wav("one.wav", 1, -18.0), reference)
    assert first["status"] == "succeeded", first["error"]
    (key,) = _profiles()
    s3 = emulated_s3()
    s3.put_object(
        Bucket=function_settings().results_bucket, Key=key, Body=b'{"format": "nonsense"}'
    )

    # When the next job uses the same reference
    s3_calls.clear()
    second = _master(api, invoke_master, make_wav("two.wav", 3, -18.0), reference)

    # Then the job still succeeds, from a fresh analysis, and the entry is usable again
    assert second["status"] == "succeeded", second["error"]
    assert len(s3_calls.gets("/reference")) == 1
    assert second["metrics"]["reference_lufs"] == first["metrics"]["reference_lufs"]
    body = s3.get_object(Bucket=function_settings().results_bucket, Key=key)["Body"].read()
    assert b"spectrum-reference-profile" in body


def test_identical_files_are_refused_before_any_download(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    s3_calls: S3Calls,
    stack: Stack,
    make_wav: Callable[[str, int, float], Path],
    tmp_path: Path,
) -> None:
    # Given a target and a reference with the same bytes under different names
    target = make_wav("song.wav", 1, -6.0)
    twin = tmp_path / "twin.wav"
    twin.write_bytes(target.read_bytes())

    # When the job runs
    job = _master(api, invoke_master, target, twin)

    # Then it fails as identical inputs, known from S3's metadata alone
    assert job["status"] == "failed"
    assert job["error"]["code"] == "identical_inputs"
    assert s3_calls.gets("uploads/") == []
    assert stack.leftovers() == []


def test_a_preset_is_rendered_once_then_read_as_a_stored_profile(
    api: ApiClient,
    invoke_master: Callable[..., Any],
    s3_calls: S3Calls,
    make_wav: Callable[[str, int, float], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a first job mastered with a preset
    job_id, sizes = create_and_upload(
        api, make_wav("one.wav", 1, -18.0), None, preset="warm", outputs=["wav16"]
    )
    deliver(invoke_master, job_id, "target", sizes["target"])
    first = api.call("GET", f"/jobs/{job_id}").body
    assert first["status"] == "succeeded", first["error"]
    assert [key for key in _profiles() if "/presets/" in key] != []

    # When another owner's job uses the same preset, with rendering presets made impossible
    import mastering.engine.preset_audio

    monkeypatch.setattr(mastering.engine.preset_audio, "preset_profile", _refuse_analysis)
    s3_calls.clear()
    job_id, sizes = create_and_upload(
        api, make_wav("two.wav", 3, -18.0), None, owner="user-2", preset="warm", outputs=["wav16"]
    )
    deliver(invoke_master, job_id, "target", sizes["target"])

    # Then it succeeds from the stored profile, with the same reference loudness
    second = api.call("GET", f"/jobs/{job_id}", owner="user-2").body
    assert second["status"] == "succeeded", second["error"]
    assert second["metrics"]["reference_lufs"] == first["metrics"]["reference_lufs"]
    assert len(s3_calls.gets("/presets/")) == 1
