"""Typed storage errors: what a failed S3 or filesystem request means, decided where pyarrow or boto3
raise it, from the AWS error code, the HTTP status and the exception type, never from free text.

Four kinds, each a subclass of StorageError (an OSError, so code that catches OSError still does):
ObjectMissing (a FileNotFoundError; BucketMissing when the bucket itself is absent), AccessDenied (a
PermissionError: the credentials or a policy refuse), StoreUnreachable (the store is down, silent or
overloaded: the only kind that is waited for) and StorageMisconfigured (a request the store refuses for
a reason a retry cannot fix: wrong region, clock skew, an unsupported header). Messages keep the
original text; in pyarrow's, bucket and key names are cut out before the code is read (boto3's carry
the code apart from the text), so an object named
`403.jpg` or a bucket named `denied-500` is still reported as missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError, NoCredentialsError, PartialCredentialsError


class StorageError(OSError):
    """A storage request failed. `code`: the AWS error code (or SDK error type) it was classified from;
    `status`: the HTTP status, 0 when no answer came."""

    def __init__(self, message: str, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code, self.status = code, status

    def __reduce__(self) -> tuple:  # crosses Ray task boundaries with its kind, code and status
        return type(self), (str(self), self.code, self.status)


class ObjectMissing(StorageError, FileNotFoundError):
    """The key (or, for BucketMissing, the bucket) does not exist."""


class BucketMissing(ObjectMissing):
    """The bucket does not exist."""


class AccessDenied(StorageError, PermissionError):
    """The store refuses these credentials, or a policy refuses them this request."""


class StoreUnreachable(StorageError):
    """The store is down, silent or overloaded: worth waiting for. `timed_out`: it never answered."""

    @property
    def timed_out(self) -> bool:
        return self.code in ("REQUEST_TIMEOUT", "RequestTimeout", "curlCode: 28", "timeout")


class StorageMisconfigured(StorageError):
    """The store refuses the request for a reason a retry cannot fix (region, clock, headers, endpoint)."""


# pyarrow's AWS SDK error types (arrow's S3ErrorToString) by kind; any other type, and UNKNOWN with a
# status none of these name, is StorageMisconfigured.
_ARROW_MISSING = {"NO_SUCH_KEY", "RESOURCE_NOT_FOUND", "NO_SUCH_UPLOAD"}
_ARROW_DENIED = {"ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "INVALID_SIGNATURE",
                 "INCOMPLETE_SIGNATURE", "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN",
                 "UNRECOGNIZED_CLIENT", "REQUEST_EXPIRED", "OPT_IN_REQUIRED"}
_ARROW_UNREACHABLE = {"NETWORK_CONNECTION", "SERVICE_UNAVAILABLE", "SLOW_DOWN", "THROTTLING",
                      "INTERNAL_FAILURE", "REQUEST_TIMEOUT"}
# S3's error codes (boto3's Error.Code) by kind.
_S3_MISSING = {"NoSuchKey", "NotFound", "NoSuchUpload"}
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
              "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity"}
_S3_UNREACHABLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}
_UNREACHABLE_STATUS = {408, 429}
# pyarrow's text: "<what it did, with 'key' and 'bucket'>: AWS Error <TYPE>[ (HTTP status N)] during <Op>
# operation: <the store's or curl's message>". The type must follow the quoted prefix (or open the text).
_ARROW_ERROR = re.compile(r"(?:^|': )AWS Error (?P<type>[A-Z_]+|\[code \d+\])"
                          r"(?: \(HTTP status (?P<status>\d+)\))? during \w+ operation: (?P<detail>.*)", re.S)
_CURL_TIMEOUT = re.compile(r"^curlCode: 28\b")


def _without(text: str, names: Iterable[str]) -> str:
    """`text` with each of `names` (bucket, key, path) cut out, longest first."""
    for name in sorted((name for name in names if name), key=len, reverse=True):
        text = text.replace(name, "")
    return text


def _kind_of_status(status: int) -> type[StorageError]:
    if status == 404:
        return ObjectMissing
    if status in (401, 403):
        return AccessDenied
    if status >= 500 or status in _UNREACHABLE_STATUS:
        return StoreUnreachable
    return StorageMisconfigured


def from_arrow(exc: OSError, names: Iterable[str] = ()) -> OSError:
    """The typed error for an OSError pyarrow raised while working on `names` (bucket, key, path);
    an OSError that is no storage request's failure (a local disk full) is returned as it is."""
    if isinstance(exc, StorageError):
        return exc
    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return ObjectMissing(text, "NotFound", 404)
    if isinstance(exc, PermissionError):
        return AccessDenied(text, "AccessDenied", 403)
    found = _ARROW_ERROR.search(_without(text, names))
    if found is None:
        return StoreUnreachable(text, "timeout") if isinstance(exc, TimeoutError) else (
            StoreUnreachable(text, "connection") if isinstance(exc, ConnectionError) else exc)
    kind, status = found["type"], int(found["status"] or 0)
    if kind == "NETWORK_CONNECTION" and _CURL_TIMEOUT.match(found["detail"]):
        return StoreUnreachable(text, "curlCode: 28")
    if kind == "NO_SUCH_BUCKET":
        return BucketMissing(text, kind, 404)
    for codes, error in ((_ARROW_MISSING, ObjectMissing), (_ARROW_DENIED, AccessDenied),
                         (_ARROW_UNREACHABLE, StoreUnreachable)):
        if kind in codes:
            return error(text, kind, status)
    return _kind_of_status(status)(text, kind, status) if kind == "UNKNOWN" and status else (
        StorageMisconfigured(text, kind, status))


def from_boto(exc: ClientError | BotoCoreError, where: str = "") -> StorageError:
    """The typed error for a boto3 failure, its message ending in `(where)`: a ClientError by its
    Error.Code and HTTP status (its free-text message is only shown); no answer at all (refused, reset,
    timed out) is StoreUnreachable."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = str(exc.response.get("Error", {}).get("Message", "") or "")
        text = f"{code or status}: {message}".rstrip(": ") + (f" ({where})" if where else "")
        if code == "NoSuchBucket":
            return BucketMissing(text, code, status)
        for codes, error in ((_S3_MISSING, ObjectMissing), (_S3_DENIED, AccessDenied),
                             (_S3_UNREACHABLE, StoreUnreachable)):
            if code in codes:
                return error(text, code, status)
        return _kind_of_status(status)(text, code, status)
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        timed_out = "timeout" in type(exc).__name__.lower()
        return StoreUnreachable(f"{type(exc).__name__}: {exc}", "timeout" if timed_out else "connection")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDenied(f"{type(exc).__name__}: {exc}", type(exc).__name__)
    return StorageMisconfigured(f"{type(exc).__name__}: {exc}", type(exc).__name__)


def typed(exc: BaseException, names: Iterable[str] = ()) -> BaseException:
    """`exc` as a typed storage error when it is one (pyarrow's OSError, boto3's errors), else as it is."""
    if isinstance(exc, (ClientError, BotoCoreError)):
        return from_boto(exc)
    if isinstance(exc, OSError):
        return from_arrow(exc, names)
    return exc


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says the store is unreachable or overloaded (worth waiting for)."""
    return isinstance(typed(exc), StoreUnreachable)
