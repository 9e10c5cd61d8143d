"""storage.py without a server: URIs, the one-line explanation of storage errors, which errors are
waited for, and retry_storage's backoff and limit. The errors are pyarrow's texts as its AWS SDK words
them (the classification itself: test_storage_errors.py).

retry_storage sleeps between tries: here its clock is a fake one (the module's `time` is replaced by
FakeClock), so an outage of minutes takes no time and the waits it chose can be read back."""

from __future__ import annotations

import logging

import pyarrow.fs as pafs
import pytest

from batchinfer import storage
from batchinfer.config import S3Options, UserError
from batchinfer.storage import (StorageUnavailable, arrow_can_address, endpoint_url, explain, read_many, resolve,
                                retry_storage)
from batchinfer.storage_errors import AccessDenied, BucketMissing, ObjectMissing, is_transient

OPTIONS = S3Options(endpoint="http://s3.example:8333")
OUTAGE = OSError("When reading information for key 'in/a.jpg' in bucket 'b': AWS Error NETWORK_CONNECTION "
                 "during GetObject operation: curlCode: 7, Couldn't connect to server")


class FakeClock:
    """Stands in for the `time` module inside storage.py: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(storage, "time", fake)
    return fake


class Flaky:
    """A storage call that fails with `errors` in turn, then returns `result`."""

    def __init__(self, errors: list[Exception], result: str = "done") -> None:
        self.errors, self.result, self.calls = list(errors), result, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def test_outage_is_retried_with_backoff_until_the_store_answers(clock, caplog) -> None:
    action = Flaky([OUTAGE] * 4)
    with caplog.at_level(logging.WARNING, logger="batchinfer.storage"):
        assert retry_storage(action, "read in/a.jpg", limit_s=180) == "done"
    assert action.calls == 5 and clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert caplog.messages[0] == "storage unreachable while trying to read in/a.jpg; retrying in 0.5 s"


def test_backoff_is_capped_at_thirty_seconds(clock) -> None:
    retry_storage(Flaky([OUTAGE] * 9), "list in/", limit_s=1000)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_outage_past_the_limit_fails_saying_nothing_was_committed(clock) -> None:
    action = Flaky([OUTAGE] * 100)
    with pytest.raises(StorageUnavailable) as failed:
        retry_storage(action, "commit s3://b/out/", limit_s=20)
    message = str(failed.value)
    assert message.startswith("object storage unreachable for more than 20 s while trying to commit s3://b/out/")
    assert "AWS Error NETWORK_CONNECTION" in message and "nothing was committed" in message
    assert "--resume" in message and "\n" not in message
    assert sum(clock.sleeps) <= 20 and clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # the next wait would pass it


@pytest.mark.parametrize(("error", "raised"), [
    (FileNotFoundError("Path does not exist 'b/in/a.jpg'"), ObjectMissing),
    (OSError("When getting information for key 'in/a.jpg' in bucket 'b': AWS Error ACCESS_DENIED during "
             "HeadObject operation: No response body."), AccessDenied),
    (OSError("When listing objects under key 'in/' in bucket 'b': AWS Error NO_SUCH_BUCKET during "
             "ListObjectsV2 operation: The specified bucket does not exist"), BucketMissing),
    (ValueError("Empty path component in path b/in//a.jpg"), ValueError),
], ids=["missing", "denied", "no-bucket", "not-an-oserror"])
def test_other_errors_are_raised_at_once_typed(clock, error, raised) -> None:
    action = Flaky([error])
    with pytest.raises(raised):
        retry_storage(action, "read b/in/a.jpg")
    assert action.calls == 1 and clock.sleeps == []


def test_the_limit_counts_from_the_first_failure(clock) -> None:
    """A call that worked for 100 s before the store went away: the outage still gets the whole limit."""
    calls = []

    def long_then_down() -> str:
        calls.append(clock.now)
        if len(calls) == 1:
            clock.now += 100
        raise OUTAGE

    with pytest.raises(StorageUnavailable):
        retry_storage(long_then_down, "commit s3://b/out/", limit_s=20)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize(("error", "transient"), [
    (OUTAGE, True),
    (OSError("When uploading part for key 'out/a' in bucket 'b': AWS Error SLOW_DOWN during UploadPart "
             "operation: Please reduce your request rate"), True),
    (OSError("When reading information for key 'in/a.jpg' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) "
             "during GetObject operation: Service Unavailable"), True),
    (OSError("When getting information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during "
             "HeadObject operation: curlCode: 28, Timeout was reached"), True),
    (OSError("When reading information for key 'HTTP status 503' in bucket 'b': AWS Error ACCESS_DENIED "
             "during GetObject operation"), False),
    (FileNotFoundError("AWS Error NETWORK_CONNECTION"), False),  # the type says what it is
    (PermissionError("HTTP status 503"), False),
    (RuntimeError("AWS Error NETWORK_CONNECTION"), False),
])
def test_transient_errors(error, transient) -> None:
    assert is_transient(error) is transient


@pytest.mark.parametrize(("text", "expected"), [
    ("When getting information for key 'in' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject "
     "operation: curlCode: 28, Timeout was reached",
     ["does not respond", "http://s3.example:8333", "AWS_ENDPOINT_URL"]),
    ("When getting information for bucket 'b': AWS Error NETWORK_CONNECTION during HeadBucket operation: "
     "curlCode: 7", ["cannot reach the S3 endpoint", "s3://b/in/", "AWS_ENDPOINT_URL"]),
    ("When getting information for bucket 'b': AWS Error ACCESS_DENIED during HeadBucket operation: 403",
     ["access to s3://b/in/ was denied", "AWS_SECRET_ACCESS_KEY", "bucket policy"]),
    ("When listing objects under key 'in/' in bucket 'b': AWS Error SIGNATURE_DOES_NOT_MATCH during "
     "ListObjectsV2 operation: The request signature we calculated does not match", ["denied", "AWS_ACCESS_KEY_ID"]),
    ("When listing objects under key 'in/' in bucket 'b': AWS Error NO_SUCH_BUCKET during ListObjectsV2 "
     "operation: The specified bucket does not exist", ["the bucket in s3://b/in/ does not exist",
                                                        "create it or fix the URI"]),
    ("When getting information for key 'in' in bucket 'b': AWS Error UNKNOWN (HTTP status 301) during "
     "HeadObject operation: No response body.", ["refused a request for s3://b/in/ (UNKNOWN)", "AWS_REGION"]),
    ("something else entirely\nsecond line", ["cannot access s3://b/in/: something else entirely"]),
])
def test_explain_gives_one_line_with_the_fix(text, expected) -> None:
    error = explain(OSError(text), "s3://b/in/", OPTIONS)
    assert isinstance(error, UserError) and "\n" not in str(error)
    for needle in expected:
        assert needle in str(error)


def test_explain_names_aws_when_no_endpoint_is_set() -> None:
    assert "the default AWS endpoint" in str(explain(OUTAGE, "s3://b/", S3Options()))


def test_explain_of_an_empty_message_names_the_error_type() -> None:
    assert str(explain(ValueError(), "s3://b/", OPTIONS)) == "cannot access s3://b/: ValueError"


def test_resolve_local_paths_and_s3_uris(tmp_path) -> None:
    local = resolve(f"file://{tmp_path}/out/", S3Options())
    assert isinstance(local.filesystem, pafs.LocalFileSystem) and local.path == f"{tmp_path}/out"
    assert local.uri() == f"{tmp_path}/out" and local.join("a", "b") == f"{tmp_path}/out/a/b"
    bucket = resolve("s3://photos/in/", OPTIONS)
    assert isinstance(bucket.filesystem, pafs.S3FileSystem) and bucket.path == "photos/in"
    assert bucket.uri("photos/in/a.jpg") == "s3://photos/in/a.jpg"


@pytest.mark.parametrize(("uri", "options", "message"), [
    ("s3:///in/", S3Options(), "has no bucket: write s3://BUCKET/PREFIX/"),
    ("gs://bucket/in/", S3Options(), "unsupported URI scheme 'gs'"),
    ("s3://b/in/", S3Options(access_key="AKIA"), "only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
])
def test_resolve_refuses_what_cannot_work(uri, options, message) -> None:
    with pytest.raises(UserError, match=message):
        resolve(uri, options)


@pytest.mark.parametrize(("endpoint", "url"), [
    (None, None), ("http://seaweedfs:8333", "http://seaweedfs:8333"), ("minio.example:9000", "https://minio.example:9000"),
])
def test_endpoint_url(endpoint, url) -> None:
    assert endpoint_url(S3Options(endpoint=endpoint)) == url


@pytest.mark.parametrize(("path", "addressable"), [
    ("b/in/a.jpg", True), ("b/in//a.jpg", False), ("b/in/./a.jpg", False), ("b/in/../a.jpg", False),
])
def test_arrow_can_address(path, addressable) -> None:
    assert arrow_can_address(path) is addressable


def test_read_many_returns_each_failure_in_its_place(tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"first")
    (tmp_path / "c.jpg").write_bytes(b"third")
    paths = [str(tmp_path / name) for name in ("a.jpg", "b.jpg", "c.jpg")]
    first, missing, third = read_many(pafs.LocalFileSystem(), paths)
    assert (first, third) == (b"first", b"third")
    assert isinstance(missing, FileNotFoundError) and "b.jpg" in str(missing)


def test_read_many_fails_the_job_when_the_store_stays_down(clock, monkeypatch, tmp_path) -> None:
    """An outage is not an error row: read_many raises StorageUnavailable."""
    def unreachable(*args: object) -> bytes:
        raise OUTAGE

    monkeypatch.setattr(storage, "read_bytes", unreachable)  # stands in for a store that is down
    with pytest.raises(StorageUnavailable, match="while trying to read "):
        read_many(pafs.LocalFileSystem(), [str(tmp_path / "a.jpg")], storage_timeout_s=5)
