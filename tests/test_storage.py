"""Storage: a silent endpoint is reported in seconds; keys pyarrow cannot name are read verbatim; names
holding 403, 500 and "denied" get the right kind of error (missing, denied, unreachable).

Real parts: a TCP server that accepts connections and never answers (what a hung proxy or a wrong
port on a busy host looks like), and moto's S3 server, which keeps keys verbatim as AWS S3 does
(SeaweedFS folds `//` into `/`, so it cannot hold these keys), and SeaweedFS for the names, with a
port nothing listens on for a dead endpoint.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace

import pyarrow.fs as pafs
import pytest

from batchinfer.config import S3Options, UserError
from batchinfer.listing import S3Lister
from batchinfer.storage import (arrow_can_address, check_bucket, explain, read_bytes, read_many, resolve, s3_client,
                                 s3_filesystem)
from batchinfer.storage_errors import AccessDenied, BucketMissing, ObjectMissing, StoreUnreachable, is_transient
from tests.support import RAY_ENV, run_cli

BUCKET = "odd-keys"
# Keys that are valid on AWS S3 and that pyarrow cannot name: an empty segment is refused ("Empty path
# component"), `.` and `..` segments are folded away by the HTTP client before the request is sent.
ODD_KEYS = ["in//a.jpg", "in/x//y/b.jpg", "in/./c.jpg", "in/../d.jpg"]


class SilentServer:
    """Accepts every TCP connection and never sends a byte."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_endpoint():
    server = SilentServer()
    yield server
    server.close()


def test_silent_endpoint_is_one_line_exit_2(silent_endpoint) -> None:
    """Pre-flight probes the bucket with short timeouts, so a server that accepts connections but never
    answers is named in one line, instead of after the job's long request timeouts and retries."""
    env = {**os.environ, **RAY_ENV, "AWS_ENDPOINT_URL": silent_endpoint.endpoint, "AWS_ACCESS_KEY_ID": "key",
           "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "us-east-1"}
    result = run_cli(["run", "--input", "s3://photos/in/", "--output", "s3://photos/out/"], env, timeout_s=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("batchinfer: error: ") and "does not respond" in lines[0], lines[0]
    assert silent_endpoint.endpoint in lines[0] and "AWS_ENDPOINT_URL" in lines[0], lines[0]
    assert silent_endpoint.connections, "the probe never reached the silent server"


@pytest.fixture(scope="module")
def moto_store(moto_options: S3Options) -> S3Options:
    """moto's S3 server with a bucket of odd keys (each object holds its own key) and a plain one."""
    client = s3_client(moto_options)
    client.create_bucket(Bucket=BUCKET)
    for key in [*ODD_KEYS, "in/plain.jpg"]:
        client.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    return moto_options


def test_odd_keys_are_listed_and_read_verbatim(moto_store) -> None:
    """pyarrow lists the keys as they are; read_many reads those it cannot name with boto3."""
    fs = s3_filesystem(moto_store)
    listed = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/in", recursive=True))
                    if info.type == pafs.FileType.File)
    assert listed == sorted(f"{BUCKET}/{key}" for key in [*ODD_KEYS, "in/plain.jpg"])
    assert [arrow_can_address(path) for path in listed] == [key == "in/plain.jpg" for key in
                                                            sorted([*ODD_KEYS, "in/plain.jpg"])]
    payloads = read_many(fs, listed, s3=moto_store)
    assert payloads == [path.split("/", 1)[1].encode() for path in listed]


def test_odd_key_errors_are_typed_like_pyarrows(moto_store) -> None:
    """A missing odd key is that image's FileNotFoundError (an error row, not waited for)."""
    fs = s3_filesystem(moto_store)
    [missing] = read_many(fs, [f"{BUCKET}/in//missing.jpg"], s3=moto_store)
    assert isinstance(missing, ObjectMissing) and not is_transient(missing)
    assert "NoSuchKey" in str(missing) and f"s3://{BUCKET}/in//missing.jpg" in str(missing)


def test_without_options_pyarrow_refuses_empty_segments(moto_store) -> None:
    """Why the boto3 path exists: pyarrow's own error for such a key."""
    [refused] = read_many(s3_filesystem(moto_store), [f"{BUCKET}/in//a.jpg"])
    assert "Empty path component" in str(refused)


ODD_NAMES_BUCKET = "denied-403-500"


@pytest.fixture(scope="module")
def odd_names(s3, s3_options) -> S3Options:
    """A SeaweedFS bucket whose name, and whose one object's key, hold 403, 500 and "denied"."""
    s3.client().create_bucket(Bucket=ODD_NAMES_BUCKET)
    s3.client().put_object(Bucket=ODD_NAMES_BUCKET, Key="in/500/AccessDenied.jpg", Body=b"there")
    return s3_options


@pytest.mark.parametrize("key", ["in/403.jpg", "in/500/HTTP status 503.jpg", "in/denied/AccessDenied-403.jpg"])
def test_a_missing_key_named_403_500_denied_is_missing(odd_names, key) -> None:
    """pyarrow's path and boto3's (`in//…`, a key pyarrow cannot name) both say missing, not denied or down."""
    for path in (f"{ODD_NAMES_BUCKET}/{key}", f"{ODD_NAMES_BUCKET}/in//{key.removeprefix('in/')}"):
        with pytest.raises(ObjectMissing) as missing:
            read_bytes(s3_filesystem(odd_names), path, odd_names)
        assert not is_transient(missing.value)
        message = str(explain(missing.value, f"s3://{path}", odd_names))
        assert message == f"s3://{path} does not exist at {odd_names.endpoint}: check the URI", message


def test_a_missing_bucket_named_403_500_denied_is_missing(odd_names) -> None:
    """The listing (boto3) and the pre-flight probe (pyarrow) both name the missing bucket."""
    bucket = "nosuch-403-500-denied"
    with pytest.raises(BucketMissing) as missing:
        S3Lister(odd_names, bucket, storage_timeout_s=5).page("in/")
    assert str(explain(missing.value, f"s3://{bucket}/in/", odd_names)).startswith(
        f"the bucket in s3://{bucket}/in/ does not exist")
    with pytest.raises(UserError, match=f"bucket '{bucket}' does not exist"):
        check_bucket(resolve(f"s3://{bucket}/in/", odd_names), odd_names)


def test_a_wrong_secret_is_denied_whatever_the_names(odd_names) -> None:
    wrong = replace(odd_names, secret_key="not-the-secret")
    path = f"{ODD_NAMES_BUCKET}/in/500/AccessDenied.jpg"
    assert read_bytes(s3_filesystem(odd_names), path) == b"there"
    for key_path in (path, f"{ODD_NAMES_BUCKET}/in//500/AccessDenied.jpg"):
        with pytest.raises(AccessDenied) as denied:
            read_bytes(s3_filesystem(wrong), key_path, wrong)
        assert str(explain(denied.value, f"s3://{key_path}", wrong)).startswith(f"access to s3://{key_path} was denied")


def test_a_dead_endpoint_is_unreachable_on_both_paths() -> None:
    """Nothing listens: pyarrow's and boto3's failures are StoreUnreachable, the kind retry_storage waits for."""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    dead = S3Options(endpoint=f"http://127.0.0.1:{port}", region="us-east-1", access_key="key", secret_key="secret")
    for path in ("b/in/500.jpg", "b/in//403.jpg"):
        with pytest.raises(StoreUnreachable):
            read_bytes(s3_filesystem(dead), path, dead)
