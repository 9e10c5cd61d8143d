"""S3-compatible stores that reject the default request checksums of boto3 >= 1.36 and of pyarrow's AWS
SDK (GCS's XML API, older S3 servers): the job's clients send them only where an operation requires them.

Real parts: SeaweedFS and moto's S3 server, each behind a small HTTP proxy that records every request's
headers and refuses, as such a store does (400 InvalidArgument), any request that carries a checksum
header, a checksum trailer or an aws-chunked body.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from batchinfer.config import S3Options
from batchinfer.lease import LeaseHeld, acquire, lease_store
from batchinfer.layout import Output
from batchinfer.storage import read_bytes, resolve, s3_client, s3_filesystem, write_bytes

REFUSAL = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidArgument</Code>"
           b"<Message>Checksum headers are not supported.</Message></Error>")


def checksummed(headers: dict[str, str]) -> bool:
    """Whether a request carries a checksum: x-amz-checksum-*, x-amz-sdk-checksum-algorithm, a trailer,
    or an aws-chunked body."""
    names = {name.lower() for name in headers}
    return (any(name.startswith("x-amz-checksum-") for name in names) or "x-amz-sdk-checksum-algorithm" in names
            or "x-amz-trailer" in names or "aws-chunked" in headers.get("content-encoding", "").lower())


class ChecksumGate(BaseHTTPRequestHandler):
    """Forwards to `upstream` (headers as sent, so signatures hold); refuses checksummed requests."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    seen: list[tuple[str, str, dict[str, str]]]

    def forward(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.seen.append((self.command, self.path, headers))
        if checksummed(headers):
            self.send_response(400)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(REFUSAL)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(REFUSAL)
            self.close_connection = True
            return
        body = self.rfile.read(int(headers.get("content-length") or 0))
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("date", "server", "connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        # a HEAD answer's length is the object's, which pyarrow reads as its size
        self.send_header("Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def moto_options() -> Iterator[S3Options]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Options(endpoint=f"http://{host}:{port}", region="us-east-1", access_key="moto", secret_key="moto")
    server.stop()


@pytest.fixture(params=["seaweedfs", "moto"])
def gated(request, s3_options, moto_options) -> Iterator[tuple[S3Options, list, str]]:
    """(options through the gate, the requests it saw, a fresh bucket) in front of each store."""
    upstream = s3_options if request.param == "seaweedfs" else moto_options
    host, port = upstream.endpoint.removeprefix("http://").split(":")
    seen: list = []
    handler = type("Gate", (ChecksumGate,), {"upstream": (host, int(port)), "seen": seen})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    bucket = f"checksums-{request.node.name.split('[')[0].replace('_', '-')[-30:]}-{time.time_ns() % 10**9}"
    s3_client(upstream).create_bucket(Bucket=bucket)
    yield (S3Options(endpoint=f"http://127.0.0.1:{proxy.server_port}", region="us-east-1",
                     access_key=upstream.access_key, secret_key=upstream.secret_key), seen, bucket)
    proxy.shutdown()
    proxy.server_close()


def test_the_gate_refuses_boto3s_default_checksums(gated) -> None:
    """The control: a boto3 client with boto3's default setting (`when_supported`: given here, since
    importing batchinfer.storage sets the environment's to `when_required`) sends a checksum on a plain
    put, and the gate refuses it as such a store does."""
    options, seen, bucket = gated
    default = boto3.client("s3", endpoint_url=options.endpoint, region_name="us-east-1",
                           aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key,
                           config=Config(request_checksum_calculation="when_supported"))
    with pytest.raises(ClientError, match="InvalidArgument"):
        default.put_object(Bucket=bucket, Key="default.txt", Body=b"x")
    assert checksummed(seen[-1][2])


def test_the_jobs_clients_send_no_checksum_where_none_is_required(gated) -> None:
    """The job's boto3 client (plain and conditional puts, get, delete) and its pyarrow filesystem (a
    multipart upload, a read) pass the gate: no request carries a checksum."""
    options, seen, bucket = gated
    client = s3_client(options)
    etag = client.put_object(Bucket=bucket, Key="lease/a.json", Body=b"{}", IfNoneMatch="*")["ETag"]
    client.put_object(Bucket=bucket, Key="lease/a.json", Body=b"{ }", IfMatch=etag)
    assert client.get_object(Bucket=bucket, Key="lease/a.json")["Body"].read() == b"{ }"
    client.delete_object(Bucket=bucket, Key="lease/a.json")
    filesystem = s3_filesystem(options)
    write_bytes(filesystem, f"{bucket}/out/part-0.parquet", b"rows" * 1000)
    assert read_bytes(filesystem, f"{bucket}/out/part-0.parquet") == b"rows" * 1000
    assert {command for command, _, _ in seen} >= {"PUT", "GET", "DELETE", "POST"}
    assert not [(command, path) for command, path, headers in seen if checksummed(headers)]


def test_the_lease_works_behind_the_gate(gated) -> None:
    """The output lease (its conditional-write probe, create, heartbeat, release) through the gate."""
    options, seen, bucket = gated
    uri = f"s3://{bucket}/preds/"
    meta = Output(resolve(uri, options), options).meta
    assert lease_store(meta, options).conditional
    with acquire(meta, options, uri) as first:
        first.renew()
        with pytest.raises(LeaseHeld, match=first.run_id):
            acquire(meta, options, uri)
    with acquire(meta, options, uri) as second:  # released: free again
        assert second.run_id != first.run_id
    assert seen and not [(command, path) for command, path, headers in seen if checksummed(headers)]
