"""URIs to pyarrow filesystems and the boto3 client, early storage checks, concurrent object reads, and
the one retry policy of every storage request.

How long storage is retried (docs/reliability.md, "How long storage is waited for"): each request,
pyarrow's and boto3's alike, has the limits of a RequestLimits (seconds to connect, seconds without a
byte, the SDK's quick tries); a request that still fails with StoreUnreachable is retried by
retry_storage with backoff until the store has been unreachable for --storage-timeout (STORAGE_TIMEOUT_S)
in total, counted from its first failure; no try starts after that, and the job fails with
StorageUnavailable. Every other error (missing, denied, misconfigured) is raised at once.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
import pyarrow.fs as pafs

from batchinfer.config import S3Options, UserError
from batchinfer.storage_errors import (AccessDenied, BucketMissing, ObjectMissing, StorageMisconfigured,
                                       StoreUnreachable, from_boto, typed)

READ_THREADS = 16
STORAGE_TIMEOUT_S = 180.0  # --storage-timeout: how long the store may stay unreachable before the job fails
_MAX_BACKOFF_S = 30.0
# Checksums only where an operation requires them, as boto3 < 1.36 did: boto3 >= 1.36 and the AWS SDK
# C++ in pyarrow 26 (1.11.900) add a CRC checksum to every upload by default (pyarrow sends UploadPart as
# aws-chunked with an x-amz-checksum-crc64nvme trailer), which GCS's XML API and older S3-compatible
# servers reject. boto3 takes the setting in its Config; pyarrow's SDK reads it from the
# environment when a filesystem is built (in this process, and in each Ray worker, which imports this
# module before it rebuilds a pickled filesystem). A value the user set in the environment wins, for both.
REQUEST_CHECKSUMS = os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
RESPONSE_CHECKSUMS = os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """One S3 request's limits, for pyarrow and boto3 alike: seconds to open a connection, seconds
    without a byte before the request is abandoned, and tries (the SDK's own quick retries)."""

    connect_s: float
    read_s: float
    attempts: int

    @property
    def worst_s(self) -> float:
        """The longest one request can take against a store that accepts connections and never answers."""
        return self.attempts * (self.connect_s + self.read_s)


REQUESTS = RequestLimits(10.0, 60.0, 3)  # the job's requests
# The pre-flight probe (does the bucket exist?): a silent endpoint is reported in about 10 s, not after
# minutes of retries.
PROBE = RequestLimits(5.0, 5.0, 2)
# The lease's requests: a heartbeat ends well within the lease's 30 s TTL (lease.py).
LEASE = RequestLimits(5.0, 10.0, 2)


class StorageUnavailable(RuntimeError):
    """The object store stayed unreachable longer than the job's limit (--storage-timeout)."""


@dataclass(frozen=True)
class Location:
    """A place in storage: the filesystem, the path inside it (no scheme), and the URI users gave."""

    filesystem: pafs.FileSystem
    path: str
    scheme: str

    def uri(self, path: str | None = None) -> str:
        """The user-facing URI of `path` (default: this location)."""
        path = self.path if path is None else path
        return f"s3://{path}" if self.scheme == "s3" else path

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])


def endpoint_url(options: S3Options) -> str | None:
    """The endpoint as a URL (https:// when no scheme is given), or None for AWS's own."""
    if not options.endpoint:
        return None
    return options.endpoint if "://" in options.endpoint else f"https://{options.endpoint}"


def s3_filesystem(options: S3Options, limits: RequestLimits = REQUESTS) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem with the request limits `limits`."""
    kwargs: dict = {
        "region": options.region or "us-east-1",
        "connect_timeout": limits.connect_s,
        "request_timeout": limits.read_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=limits.attempts),
    }
    if options.endpoint:
        parsed = urlparse(endpoint_url(options))
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    if options.access_key or options.secret_key:
        if not (options.access_key and options.secret_key):
            raise UserError("only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY is set: set both, "
                            "or neither to use the default credential chain (IRSA, instance profile)")
        kwargs.update(access_key=options.access_key, secret_key=options.secret_key,
                      session_token=options.session_token)
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=None)
def s3_client(options: S3Options, limits: RequestLimits = REQUESTS):
    """The boto3 S3 client (one per process, options and limits), for what pyarrow cannot do: keys it
    cannot name, conditional writes. Same endpoint, limits and checksum setting as s3_filesystem;
    path-style addressing at a custom endpoint, as pyarrow uses."""
    config = botocore.config.Config(
        connect_timeout=limits.connect_s, read_timeout=limits.read_s,
        retries={"mode": "standard", "total_max_attempts": limits.attempts},
        s3={"addressing_style": "path" if options.endpoint else "auto"},
        request_checksum_calculation=REQUEST_CHECKSUMS, response_checksum_validation=RESPONSE_CHECKSUMS)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url(options), region_name=options.region or "us-east-1",
        aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key,
        aws_session_token=options.session_token, config=config)


def resolve(uri: str, options: S3Options) -> Location:
    """Map `s3://bucket/prefix` or a local path (`file://` or plain) to a Location."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"{uri!r} has no bucket: write s3://BUCKET/PREFIX/")
        return Location(s3_filesystem(options), f"{parsed.netloc}{parsed.path}".rstrip("/"), "s3")
    if parsed.scheme in ("", "file"):
        local = os.path.abspath(parsed.path if parsed.scheme else uri)
        return Location(pafs.LocalFileSystem(), local.rstrip("/") or "/", "file")
    raise UserError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use s3://BUCKET/PREFIX/ "
                    "or a local directory")


def explain(exc: Exception, uri: str, options: S3Options) -> UserError:
    """Turn a storage exception into a one-line message with the fix, by its kind (storage_errors)."""
    path = uri.removeprefix("s3://")
    error = typed(exc, [path, *path.split("/", 1)])
    endpoint = options.endpoint or "the default AWS endpoint"
    if isinstance(error, StoreUnreachable) and error.timed_out:
        return UserError(f"the S3 endpoint {endpoint} does not respond (a request for {uri} timed out): "
                         "check that AWS_ENDPOINT_URL (or --s3-endpoint) points at an S3 server and that it "
                         "is up and not overloaded")
    if isinstance(error, StoreUnreachable):
        return UserError(f"cannot reach the S3 endpoint {endpoint} while opening {uri}: check "
                         "AWS_ENDPOINT_URL (or --s3-endpoint) and that the server is up")
    if isinstance(error, AccessDenied):
        return UserError(f"access to {uri} was denied by {endpoint} ({error.code}): check AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY (or the pod's IAM role) and the bucket policy")
    if isinstance(error, BucketMissing):
        return UserError(f"the bucket in {uri} does not exist at {endpoint}: create it or fix the URI")
    if isinstance(error, ObjectMissing):
        return UserError(f"{uri} does not exist at {endpoint}: check the URI")
    if isinstance(error, StorageMisconfigured):
        return UserError(f"{endpoint} refused a request for {uri} ({error.code or error.status}): check the "
                         "region (AWS_REGION or --s3-region), the endpoint and the machine's clock")
    text = str(error)
    return UserError(f"cannot access {uri}: {text.splitlines()[0] if text else type(error).__name__}")


def file_info(location: Location, path: str, options: S3Options) -> pafs.FileInfo:
    """get_file_info with storage errors turned into UserErrors."""
    try:
        return location.filesystem.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise explain(exc, location.uri(path), options) from None


def check_bucket(location: Location, options: S3Options) -> None:
    """Fail early, with the fix, when the bucket is missing, unreachable, silent or forbidden.

    The probe has the PROBE limits: a silent endpoint is reported in seconds, while the job's own
    requests keep the longer ones."""
    if location.scheme != "s3":
        return
    bucket = location.path.split("/", 1)[0]
    probe = Location(s3_filesystem(options, PROBE), bucket, "s3")
    if file_info(probe, bucket, options).type == pafs.FileType.NotFound:
        raise UserError(f"bucket {bucket!r} does not exist at {options.endpoint or 'AWS S3'}: create it "
                        "or fix the URI")


def retry_storage(action: Callable[[], T], description: str, limit_s: float = STORAGE_TIMEOUT_S) -> T:
    """Run a storage call; while the store is unreachable (StoreUnreachable), retry it with exponential
    backoff (0.5 s doubling to 30 s).

    Raises StorageUnavailable once the store has been unreachable for `limit_s` seconds (no try starts
    after that); any other storage error (missing, denied, misconfigured) is raised at once, typed.
    """
    deadline: float | None = None
    delay = 0.5
    while True:
        try:
            return action()
        except (OSError, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            error = typed(exc)
            if not isinstance(error, StoreUnreachable):
                if error is exc:
                    raise
                raise error from None
            deadline = deadline if deadline is not None else time.monotonic() + limit_s
            if time.monotonic() + delay > deadline:
                reason = str(error).splitlines()[0][:300]
                raise StorageUnavailable(
                    f"object storage unreachable for more than {limit_s:g} s while trying to {description} "
                    f"({reason}); nothing was committed: fix the store or endpoint, then rerun with "
                    "--resume") from None
            _log.warning("storage unreachable while trying to %s; retrying in %.1f s", description, delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)


def arrow_can_address(path: str) -> bool:
    """False for S3 keys pyarrow cannot name: an empty segment (`in//a.jpg`, valid on AWS S3) is
    refused ("Empty path component"), and `.`/`..` segments are folded away by the HTTP client."""
    return all(part not in ("", ".", "..") for part in path.split("/"))


@contextmanager
def _typed_errors(path: str) -> Iterator[None]:
    """pyarrow's OSErrors on `path` (bucket/key) raised as typed storage errors."""
    try:
        yield
    except OSError as exc:
        error = typed(exc, [path, *path.split("/", 1)])
        if error is exc:
            raise
        raise error from None


def read_key_verbatim(options: S3Options, path: str) -> bytes:
    """GET `bucket/key` with boto3, which sends any key as it is. Errors are typed as pyarrow's are."""
    bucket, key = path.split("/", 1)
    try:
        return s3_client(options).get_object(Bucket=bucket, Key=key)["Body"].read()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise from_boto(exc, f"s3://{path}") from None


def read_bytes(filesystem: pafs.FileSystem, path: str, s3: S3Options | None = None) -> bytes:
    """An object's bytes; storage failures raised typed (storage_errors). S3 keys pyarrow cannot name
    are read with boto3 when `s3` is given."""
    if s3 is not None and isinstance(filesystem, pafs.S3FileSystem) and not arrow_can_address(path):
        return read_key_verbatim(s3, path)
    with _typed_errors(path):
        with filesystem.open_input_stream(path) as stream:
            return stream.read()


def read_many(filesystem: pafs.FileSystem, paths: list[str], storage_timeout_s: float = STORAGE_TIMEOUT_S,
              s3: S3Options | None = None) -> list[bytes | Exception]:
    """Read objects concurrently (object stores are latency-bound).

    A failure of one object (missing, denied) is returned in its place and becomes that image's error
    row; an outage is retried for up to `storage_timeout_s` and then raised as StorageUnavailable, which
    fails the job rather than turning good images into error rows. With `s3`, keys pyarrow cannot name
    (`in//a.jpg`) are read too.
    """

    def read_one(path: str) -> bytes | Exception:
        try:
            return retry_storage(lambda: read_bytes(filesystem, path, s3), f"read {path}", storage_timeout_s)
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - becomes this image's error row
            return exc

    with ThreadPoolExecutor(max_workers=min(READ_THREADS, max(1, len(paths)))) as pool:
        return list(pool.map(read_one, paths))


def write_bytes(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write an object; storage failures raised typed (storage_errors)."""
    with _typed_errors(path), filesystem.open_output_stream(path) as stream:
        stream.write(data)
