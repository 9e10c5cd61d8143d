"""URIs to pyarrow filesystems, early storage checks, and concurrent object reads."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
import pyarrow.fs as pafs

from batchinfer.config import S3Options, UserError

READ_THREADS = 16
STORAGE_TIMEOUT_S = 180.0  # how long the store may stay unreachable mid-run before the job fails
# Every S3 request: seconds to open a connection, seconds without a byte before the request is abandoned,
# and tries (the SDK's own quick retries; longer outages are waited for by retry_storage).
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
REQUEST_ATTEMPTS = 3
# The pre-flight probe (does the bucket exist?) gives up sooner: 2 tries of 5 s each, so an endpoint
# that accepts connections but never answers is reported in about 10 s, not after minutes of retries.
PROBE_TIMEOUT_S = 5.0
PROBE_ATTEMPTS = 2
# Errors that mean "the store is unreachable or overloaded", not "this object is bad": the AWS SDK's
# names for them, as in Ray Data's DataContext.retried_io_errors, plus 5xx answers and curl failures.
TRANSIENT_STORAGE_ERRORS = (
    "AWS Error NETWORK_CONNECTION", "AWS Error SERVICE_UNAVAILABLE", "AWS Error SLOW_DOWN",
    "AWS Error INTERNAL_FAILURE", "AWS Error REQUEST_TIMEOUT", "HTTP status 5", "curlCode",
)
_MAX_BACKOFF_S = 30.0
_log = logging.getLogger(__name__)
T = TypeVar("T")


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


def s3_filesystem(options: S3Options, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                  request_timeout_s: float = REQUEST_TIMEOUT_S, attempts: int = REQUEST_ATTEMPTS
                  ) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem with retries and timeouts suited to long batch jobs."""
    kwargs: dict = {
        "region": options.region or "us-east-1",
        "connect_timeout": connect_timeout_s,
        "request_timeout": request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
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
    """Turn a storage exception into a one-line message with the fix."""
    text = str(exc)
    endpoint = options.endpoint or "the default AWS endpoint"
    if "curlCode: 28" in text or "REQUEST_TIMEOUT" in text:
        return UserError(f"the S3 endpoint {endpoint} does not respond (a request for {uri} timed out): "
                         "check that AWS_ENDPOINT_URL (or --s3-endpoint) points at an S3 server and that it "
                         "is up and not overloaded")
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        return UserError(f"cannot reach the S3 endpoint {endpoint} while opening {uri}: check "
                         "AWS_ENDPOINT_URL (or --s3-endpoint) and that the server is up")
    if any(code in text for code in ("ACCESS_DENIED", "SignatureDoesNotMatch", "InvalidAccessKeyId",
                                     "AccessDenied", "403", "INVALID_ACCESS_KEY_ID", "SIGNATURE")):
        return UserError(f"access to {uri} was denied by {endpoint}: check AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY (or the pod's IAM role) and the bucket policy")
    if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
        return UserError(f"the bucket in {uri} does not exist at {endpoint}: create it or fix the URI")
    return UserError(f"cannot access {uri}: {text.splitlines()[0] if text else type(exc).__name__}")


def file_info(location: Location, path: str, options: S3Options) -> pafs.FileInfo:
    """get_file_info with storage errors turned into UserErrors."""
    try:
        return location.filesystem.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise explain(exc, location.uri(path), options) from None


def check_bucket(location: Location, options: S3Options) -> None:
    """Fail early, with the fix, when the bucket is missing, unreachable, silent or forbidden.

    The probe uses short timeouts (PROBE_TIMEOUT_S, PROBE_ATTEMPTS): a silent endpoint is reported in
    seconds, while the job's own requests keep the longer ones."""
    if location.scheme != "s3":
        return
    bucket = location.path.split("/", 1)[0]
    probe = Location(s3_filesystem(options, PROBE_TIMEOUT_S, PROBE_TIMEOUT_S, PROBE_ATTEMPTS), bucket, "s3")
    if file_info(probe, bucket, options).type == pafs.FileType.NotFound:
        raise UserError(f"bucket {bucket!r} does not exist at {options.endpoint or 'AWS S3'}: create it "
                        "or fix the URI")


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says the store is unreachable or overloaded (worth waiting for)."""
    if not isinstance(exc, OSError) or isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    text = str(exc)
    return any(marker in text for marker in TRANSIENT_STORAGE_ERRORS)


def retry_storage(action: Callable[[], T], description: str, limit_s: float = STORAGE_TIMEOUT_S) -> T:
    """Run a storage call; while the store is unreachable, retry it with exponential backoff.

    Raises StorageUnavailable once the store has been unreachable for `limit_s` seconds; any other
    error (a missing object, a denied request) is raised at once.
    """
    deadline = time.monotonic() + limit_s
    delay = 0.5
    while True:
        try:
            return action()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                reason = str(exc).splitlines()[0][:300]
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


@functools.lru_cache(maxsize=None)
def _s3_client(options: S3Options):
    """A boto3 S3 client (one per process and options) with the same endpoint, timeouts and tries as
    s3_filesystem; path-style addressing, as pyarrow uses."""
    config = botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=REQUEST_TIMEOUT_S, s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": REQUEST_ATTEMPTS})
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url(options), region_name=options.region or "us-east-1",
        aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key,
        aws_session_token=options.session_token, config=config)


def read_key_verbatim(options: S3Options, path: str) -> bytes:
    """GET `bucket/key` with boto3, which sends any key as it is. Errors are raised as the OSErrors
    pyarrow would raise, so retry_storage and the error rows treat both paths alike."""
    bucket, key = path.split("/", 1)
    try:
        return _s3_client(options).get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{error.get('Code')}: {error.get('Message')} (s3://{path})"
        if status == 404:
            raise FileNotFoundError(text) from None
        if status == 403:
            raise PermissionError(text) from None
        raise OSError(f"HTTP status {status} {text}") from None
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        # refused, reset or timed out: the store is unreachable, which retry_storage waits for
        raise OSError(f"AWS Error NETWORK_CONNECTION: {exc}") from None


def read_bytes(filesystem: pafs.FileSystem, path: str, s3: S3Options | None = None) -> bytes:
    """An object's bytes. S3 keys pyarrow cannot name are read with boto3 when `s3` is given."""
    if s3 is not None and isinstance(filesystem, pafs.S3FileSystem) and not arrow_can_address(path):
        return read_key_verbatim(s3, path)
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
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)
