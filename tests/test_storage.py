"""Storage: a silent endpoint is reported in seconds; keys pyarrow cannot name are read verbatim.

Real parts: a TCP server that accepts connections and never answers (what a hung proxy or a wrong
port on a busy host looks like), and moto's S3 server, which keeps keys verbatim as AWS S3 does
(SeaweedFS folds `//` into `/`, so it cannot hold these keys).
"""

from __future__ import annotations

import os
import socket
import threading

import boto3
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from batchinfer.config import S3Options
from batchinfer.storage import arrow_can_address, read_many, s3_filesystem
from batchinfer.storage_errors import ObjectMissing, is_transient
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
def moto_store():
    """moto's S3 server with a bucket of odd keys (each object holds its own key) and a plain one."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = S3Options(endpoint=f"http://{host}:{port}", region="us-east-1", access_key="moto",
                        secret_key="moto")
    client = boto3.client("s3", endpoint_url=options.endpoint, region_name="us-east-1",
                          aws_access_key_id="moto", aws_secret_access_key="moto")
    client.create_bucket(Bucket=BUCKET)
    for key in [*ODD_KEYS, "in/plain.jpg"]:
        client.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    yield options
    server.stop()


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
    assert isinstance(missing, FileNotFoundError) and not is_transient(missing)
    assert "NoSuchKey" in str(missing) and f"s3://{BUCKET}/in//missing.jpg" in str(missing)


def test_without_options_pyarrow_refuses_empty_segments(moto_store) -> None:
    """Why the boto3 path exists: pyarrow's own error for such a key."""
    [refused] = read_many(s3_filesystem(moto_store), [f"{BUCKET}/in//a.jpg"])
    assert "Empty path component" in str(refused)
