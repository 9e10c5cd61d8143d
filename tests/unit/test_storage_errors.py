"""storage_errors.py without a server: each kind decided from the AWS error code, the HTTP status and the
exception type, never from names. The texts are pyarrow's (as its AWS SDK words them, taken from real
failures against SeaweedFS); boto3's errors are botocore's own exception classes, built as botocore builds
them from an answer. Against a real server: tests/test_storage.py."""

from __future__ import annotations

import pickle

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from batchinfer.config import S3Options
from batchinfer.storage import explain
from batchinfer.storage_errors import (AccessDenied, BucketMissing, ObjectMissing, StorageMisconfigured,
                                       StoreUnreachable, from_arrow, from_boto, is_transient, typed)

OPTIONS = S3Options(endpoint="http://s3.example:8333")


def arrow(what: str, kind: str, detail: str = "No response body.", operation: str = "HeadObject") -> OSError:
    """An OSError as pyarrow raises it: `<what>: AWS Error <kind> during <operation> operation: <detail>`."""
    return OSError(f"{what}: AWS Error {kind} during {operation} operation: {detail}")


def client_error(code: str, status: int, message: str = "", **extra: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message, **extra},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("error", "kind"), [
    # names that hold the words and numbers the old substring tests looked for
    (arrow("When getting information for key 'in/403.jpg' in bucket 'b'", "UNKNOWN (HTTP status 404)"),
     ObjectMissing),
    (arrow("When getting information for key 'denied/AccessDenied.jpg' in bucket 'access-denied'", "NO_SUCH_KEY",
           "The specified key does not exist."), ObjectMissing),
    (arrow("When listing objects under key 'in/' in bucket 'http-status-500'", "NO_SUCH_BUCKET",
           "The specified bucket does not exist", "ListObjectsV2"), BucketMissing),
    (arrow("When reading information for key 'HTTP status 503/curlCode: 7' in bucket 'b'", "ACCESS_DENIED"),
     AccessDenied),
    (arrow("When uploading part for key 'x' in bucket '500'", "SIGNATURE_DOES_NOT_MATCH",
           "The request signature we calculated does not match", "UploadPart"), AccessDenied),
    (arrow("When getting information for key \"AWS Error ACCESS_DENIED during HeadObject operation: x\" in "
           "bucket 'b'", "UNKNOWN (HTTP status 404)"), ObjectMissing),
    (arrow("When reading information for key '404' in bucket 'b'", "UNKNOWN (HTTP status 503)"), StoreUnreachable),
    (arrow("When reading information for key '404' in bucket 'b'", "SLOW_DOWN"), StoreUnreachable),
    (arrow("When reading information for key 'a' in bucket 'b'", "NETWORK_CONNECTION",
           "curlCode: 7, Could not connect to server"), StoreUnreachable),
    (arrow("When reading information for key 'a' in bucket 'b'", "UNKNOWN (HTTP status 301)"), StorageMisconfigured),
    (arrow("When reading information for key 'a' in bucket 'b'", "REQUEST_TIME_TOO_SKEWED"), StorageMisconfigured),
    (arrow("When uploading part for key 'a' in bucket 'b'", "[code 133]", "x", "UploadPart"), StorageMisconfigured),
    (FileNotFoundError("[Errno 2] Path does not exist 'b/in/AccessDenied-403.jpg'"), ObjectMissing),
    (PermissionError("[Errno 13] Permission denied: '/out/500'"), AccessDenied),
], ids=["404-named-403", "no-such-key-named-denied", "no-such-bucket-named-500", "denied-named-503",
        "signature-bucket-500", "denied-token-inside-a-name", "503-named-404", "slow-down", "connection-refused",
        "moved", "clock-skew", "unknown-code", "not-found-type", "permission-type"])
def test_pyarrow_errors_are_typed_by_their_code(error, kind) -> None:
    typed_error = from_arrow(error)
    assert type(typed_error) is kind and str(typed_error) == str(error)
    assert is_transient(error) is (kind is StoreUnreachable)


def test_an_oserror_that_is_no_storage_failure_stays_as_it_is() -> None:
    full = OSError(28, "No space left on device")
    assert from_arrow(full) is full and not is_transient(full)


@pytest.mark.parametrize(("error", "kind"), [
    (client_error("NoSuchKey", 404, "The specified key does not exist.", Key="in/403.jpg"), ObjectMissing),
    (client_error("404", 404), ObjectMissing),  # a HEAD answer has no body: the status is the code
    (client_error("NoSuchBucket", 404, "The specified bucket does not exist", BucketName="denied-500"),
     BucketMissing),
    (client_error("AccessDenied", 403, "Access Denied for in/404.jpg"), AccessDenied),
    (client_error("InvalidAccessKeyId", 403), AccessDenied),
    (client_error("SlowDown", 503), StoreUnreachable),
    (client_error("InternalError", 500), StoreUnreachable),
    (client_error("RequestTimeout", 400), StoreUnreachable),
    (client_error("AuthorizationHeaderMalformed", 400, "the region 'us-east-1' is wrong; expecting 'eu-west-1'"),
     StorageMisconfigured),
    (client_error("InvalidArgument", 400, "x-amz-checksum-crc32 is not supported"), StorageMisconfigured),
    (EndpointConnectionError(endpoint_url="http://s3.example:8333/denied-403"), StoreUnreachable),
    (ReadTimeoutError(endpoint_url="http://s3.example:8333/b/404"), StoreUnreachable),
    (NoCredentialsError(), AccessDenied),
], ids=["no-such-key-named-403", "head-404", "no-such-bucket-named-500", "denied-message-naming-404",
        "bad-key-id", "slow-down", "internal", "request-timeout", "wrong-region", "checksum-refused",
        "refused-connection", "read-timeout", "no-credentials"])
def test_boto3_errors_are_typed_by_code_and_status(error, kind) -> None:
    assert type(from_boto(error)) is kind
    assert is_transient(error) is (kind is StoreUnreachable)


def test_boto3_messages_keep_the_text_and_say_where() -> None:
    error = from_boto(client_error("NoSuchKey", 404, "No such key: in/403.jpg"), "s3://b/in/403.jpg")
    assert str(error) == "NoSuchKey: No such key: in/403.jpg (s3://b/in/403.jpg)"
    assert (error.code, error.status) == ("NoSuchKey", 404)


def test_typed_errors_keep_the_builtin_types_callers_catch() -> None:
    assert isinstance(ObjectMissing("x"), FileNotFoundError) and isinstance(AccessDenied("x"), PermissionError)
    assert all(issubclass(kind, OSError) for kind in (StoreUnreachable, StorageMisconfigured, BucketMissing))
    assert typed(ValueError("Empty path component")).__class__ is ValueError


def test_typed_errors_cross_process_boundaries_whole() -> None:
    """Ray pickles a task's exception: the kind, the code and the status survive."""
    again = pickle.loads(pickle.dumps(BucketMissing("gone", "NoSuchBucket", 404)))
    assert type(again) is BucketMissing and (str(again), again.code, again.status) == ("gone", "NoSuchBucket", 404)


@pytest.mark.parametrize("uri", ["s3://b/in/403.jpg", "s3://denied-500/in/AccessDenied.jpg", "s3://403/500/"])
def test_explain_says_missing_for_missing_names_holding_403_500_denied(uri) -> None:
    key = uri.removeprefix("s3://").split("/", 1)
    message = str(explain(arrow(f"When getting information for key '{key[1]}' in bucket '{key[0]}'",
                                "UNKNOWN (HTTP status 404)"), uri, OPTIONS))
    assert message == f"{uri} does not exist at http://s3.example:8333: check the URI"
    message = str(explain(FileNotFoundError(f"[Errno 2] Path does not exist '{uri[5:]}'"), uri, OPTIONS))
    assert "does not exist" in message and "denied" not in message.replace(uri, "")


def test_explain_says_denied_for_a_denied_name_holding_404() -> None:
    message = str(explain(arrow("When reading information for key 'in/404.jpg' in bucket 'nosuchbucket'",
                                "ACCESS_DENIED"), "s3://nosuchbucket/in/404.jpg", OPTIONS))
    assert message.startswith("access to s3://nosuchbucket/in/404.jpg was denied by http://s3.example:8333 "
                              "(ACCESS_DENIED)")
