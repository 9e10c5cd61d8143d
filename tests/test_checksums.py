"""S3-compatible stores that reject the default request checksums of boto3 >= 1.36 and of pyarrow's AWS
SDK (GCS's XML API, older S3 servers): the job's clients send them only where an operation requires them.

Real parts: SeaweedFS and moto's S3 server, each behind a small HTTP proxy (tests/support.py) that records every request's
headers and refuses, as such a store does (400 InvalidArgument), any request that carries a checksum
header, a checksum trailer or an aws-chunked body.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from batchinfer.config import S3Options
from batchinfer.lease import LeaseHeld, acquire, lease_store
from batchinfer.layout import Output
from batchinfer.storage import read_bytes, resolve, s3_client, s3_filesystem, write_bytes
from tests.support import S3Forwarder, forwarding

REFUSAL = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidArgument</Code>"
           b"<Message>Checksum headers are not supported.</Message></Error>")


def checksummed(headers: dict[str, str]) -> bool:
    """Whether a request carries a checksum: x-amz-checksum-*, x-amz-sdk-checksum-algorithm, a trailer,
    or an aws-chunked body."""
    names = {name.lower() for name in headers}
    return (any(name.startswith("x-amz-checksum-") for name in names) or "x-amz-sdk-checksum-algorithm" in names
            or "x-amz-trailer" in names or "aws-chunked" in headers.get("content-encoding", "").lower())


class ChecksumGate(S3Forwarder):
    """Refuses checksummed requests as such a store does."""

    def refusal(self, headers: dict[str, str]) -> tuple[int, bytes] | None:
        return (400, REFUSAL) if checksummed(headers) else None


@pytest.fixture(params=["seaweedfs", "moto"])
def gated(request, s3_options, moto_options) -> Iterator[tuple[S3Options, list, str]]:
    """(options through the gate, the requests it saw, a fresh bucket) in front of each store."""
    upstream = s3_options if request.param == "seaweedfs" else moto_options
    seen: list = []
    bucket = f"checksums-{request.node.name.split('[')[0].replace('_', '-')[-30:]}-{time.time_ns() % 10**9}"
    s3_client(upstream).create_bucket(Bucket=bucket)
    with forwarding(upstream, ChecksumGate, seen) as options:
        yield options, seen, bucket


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
