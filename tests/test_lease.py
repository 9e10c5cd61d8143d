"""The output lease on real stores: SeaweedFS and moto's S3 server (both honour If-None-Match and
If-Match), and moto behind a proxy that drops the conditional headers (as an
S3-compatible server without them would: the verified fallback). Whole runs competing for one output:
tests/reliability/test_writers.py. The local filesystem's lease: tests/unit/test_lease_local.py."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from batchinfer.config import S3Options, UserError
from batchinfer.lease import LEASE, LEASE_TTL_S, Lease, LeaseHeld, LeaseLost, acquire, lease_store
from batchinfer.layout import Output
from batchinfer.storage import resolve
from tests.support import S3Forwarder, forwarding


@pytest.fixture(params=["seaweedfs", "moto", "local"])
def store(request, tmp_path):
    """(output URI, S3Options, raw reader of the lease object) on each kind of store."""
    name = f"lease-{request.node.name.split('[')[0].replace('_', '-')[-40:]}-{time.time_ns() % 10**9}"
    if request.param == "local":
        return str(tmp_path / "out"), S3Options(), lambda: (tmp_path / f"out.batchinfer/{LEASE}").read_bytes()
    options = (S3Options(endpoint=request.getfixturevalue("s3").endpoint, region="us-east-1",
                         access_key=request.getfixturevalue("s3").access_key,
                         secret_key=request.getfixturevalue("s3").secret_key)
               if request.param == "seaweedfs" else request.getfixturevalue("moto_options"))
    import boto3

    client = boto3.client("s3", endpoint_url=options.endpoint, region_name="us-east-1",
                          aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key)
    client.create_bucket(Bucket=name)
    return (f"s3://{name}/preds/", options,
            lambda: client.get_object(Bucket=name, Key=f"preds.batchinfer/{LEASE}")["Body"].read())


def meta(uri: str, options: S3Options):
    return Output(resolve(uri, options), options).meta


def test_conditional_writes_detected(store) -> None:
    """Both servers refuse a create-if-absent over an existing object and a write with a stale ETag."""
    uri, options, _ = store
    assert lease_store(meta(uri, options), options).conditional


def test_second_writer_is_refused_naming_the_first(store) -> None:
    uri, options, read_lease = store
    with acquire(meta(uri, options), options, uri) as first:
        written = json.loads(read_lease())
        assert written["run_id"] == first.run_id and written["pid"] == os.getpid()
        with pytest.raises(LeaseHeld) as refused:
            acquire(meta(uri, options), options, uri)
        message = str(refused.value)
        assert isinstance(refused.value, UserError) and "\n" not in message
        assert first.run_id in message and written["started_at"] in message and written["host"] in message
    with acquire(meta(uri, options), options, uri) as second:  # released: free again
        assert second.run_id != first.run_id


def test_concurrent_acquires_have_one_winner(store) -> None:
    """Eight runs start at the same moment: exactly one gets the lease."""
    uri, options, read_lease = store
    start = threading.Barrier(8)

    def contend(_: int) -> Lease | None:
        start.wait()
        try:
            return acquire(meta(uri, options), options, uri)
        except LeaseHeld:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [lease for lease in pool.map(contend, range(8)) if lease is not None]
    assert len(winners) == 1
    assert json.loads(read_lease())["run_id"] == winners[0].run_id
    winners[0].release()


def test_waiting_writer_gets_the_lease_when_the_first_ends(store) -> None:
    uri, options, _ = store
    first = acquire(meta(uri, options), options, uri)
    threading.Timer(3, first.release).start()  # the scenario: the first run ends 3 s after the second starts
    with acquire(meta(uri, options), options, uri, wait_s=60) as second:
        assert first.token is None and second.token is not None


def test_heartbeat_keeps_the_lease_and_a_takeover_is_noticed(store) -> None:
    """Renewals change the stored version; once another run has replaced the lease, the holder's next
    renewal raises LeaseLost naming that run, and its release leaves the new lease alone."""
    uri, options, read_lease = store
    lease = acquire(meta(uri, options), options, uri)
    before = lease.token
    lease.renew()
    assert lease.token != before and json.loads(read_lease())["run_id"] == lease.run_id
    intruder = Lease(lease_store(meta(uri, options), options), uri)
    intruder.token = intruder.store.replace(intruder._data(), intruder.store.read().token)  # a takeover
    with pytest.raises(LeaseLost) as lost:
        lease.renew()
    assert intruder.run_id in str(lost.value) and "nothing was committed" in str(lost.value)
    lease.release()
    assert json.loads(read_lease())["run_id"] == intruder.run_id
    intruder.release()


@pytest.mark.slow
def test_s3_lease_of_a_dead_run_expires(s3) -> None:
    """On SeaweedFS, judged on the server's clock: a lease left behind is taken over once its
    Last-Modified is more than the TTL old, and not before."""
    options = S3Options(endpoint=s3.endpoint, region="us-east-1", access_key=s3.access_key, secret_key=s3.secret_key)
    s3.client().create_bucket(Bucket="lease-expiry")
    uri = "s3://lease-expiry/preds/"
    crashed = acquire(meta(uri, options), options, uri)
    crashed._stop.set()
    crashed._thread.join()
    with pytest.raises(LeaseHeld):  # fresh: not taken over
        acquire(meta(uri, options), options, uri)
    with acquire(meta(uri, options), options, uri, wait_s=LEASE_TTL_S + 30) as successor:
        assert successor.run_id != crashed.run_id


def test_bucket_root_output_is_refused() -> None:
    with pytest.raises(UserError, match="give a prefix such as s3://bucket/predictions/"):
        Output(resolve("s3://bucket/", S3Options()), S3Options())


class DropConditions(S3Forwarder):
    """Forwards every request without If-None-Match / If-Match: an S3 server that ignores them."""

    dropped = frozenset({"if-none-match", "if-match"})


@pytest.fixture(scope="module")
def ignoring_options(moto_options):
    with forwarding(moto_options, DropConditions) as options:
        yield options


def test_verified_fallback_where_conditions_are_ignored(ignoring_options) -> None:
    """The probe finds the headers ignored; the lease still refuses a second run (started after the
    first) naming the first, and its holder still notices a takeover."""
    import boto3

    options = ignoring_options
    boto3.client("s3", endpoint_url=options.endpoint, region_name="us-east-1", aws_access_key_id="moto",
                 aws_secret_access_key="moto").create_bucket(Bucket="lease-fallback")
    uri = "s3://lease-fallback/preds/"
    assert not lease_store(meta(uri, options), options).conditional
    with acquire(meta(uri, options), options, uri) as first:
        with pytest.raises(LeaseHeld, match=f"another run {first.run_id} "):
            acquire(meta(uri, options), options, uri)
        intruder = Lease(lease_store(meta(uri, options), options), uri)
        intruder.token = intruder.store.replace(intruder._data(), intruder.store.read().token)
        with pytest.raises(LeaseLost, match=intruder.run_id):
            first.renew()
    intruder.release()
    with acquire(meta(uri, options), options, uri) as again:  # released: free again
        assert again.run_id not in (first.run_id, intruder.run_id)
