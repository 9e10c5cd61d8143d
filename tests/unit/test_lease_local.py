"""The output lease on the local filesystem (lease.py's LocalLeaseStore: create with O_CREAT|O_EXCL,
compare-and-swap under an flock). The same rules on real S3 servers: tests/test_lease.py."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from batchinfer.config import S3Options, UserError
from batchinfer.lease import LEASE, LEASE_TTL_S, Lease, LeaseHeld, LeaseLost, LocalLeaseStore, acquire, lease_store
from batchinfer.storage import resolve

LOCAL = S3Options()


def meta_of(tmp_path: Path):
    """The meta location of an output `tmp_path/out` (its files go to `out.batchinfer/`)."""
    return resolve(str(tmp_path / "out.batchinfer"), LOCAL)


def lease_file(tmp_path: Path) -> Path:
    return tmp_path / "out.batchinfer" / LEASE


def test_local_outputs_use_the_file_store(tmp_path) -> None:
    store = lease_store(meta_of(tmp_path), LOCAL)
    assert isinstance(store, LocalLeaseStore) and store.conditional


def test_create_is_exclusive_and_replace_needs_the_current_version(tmp_path) -> None:
    store = LocalLeaseStore(lease_file(tmp_path))
    first = store.create(b"one")
    assert first is not None and store.create(b"two") is None
    assert store.read().data == b"one" and store.read().token == first
    assert store.replace(b"three", "stale-version") is None
    second = store.replace(b"three", first)
    assert second not in (None, first) and store.read().data == b"three"
    store.delete(first)  # not the current version: left alone
    assert store.read() is not None
    store.delete(second)
    assert store.read() is None and not lease_file(tmp_path).exists()


def test_second_writer_is_refused_naming_the_first(tmp_path) -> None:
    uri = str(tmp_path / "out")
    with acquire(meta_of(tmp_path), LOCAL, uri) as first:
        written = json.loads(lease_file(tmp_path).read_bytes())
        assert written["run_id"] == first.run_id and written["pid"] == os.getpid()
        with pytest.raises(LeaseHeld) as refused:
            acquire(meta_of(tmp_path), LOCAL, uri)
        message = str(refused.value)
        assert isinstance(refused.value, UserError) and "\n" not in message
        assert first.run_id in message and written["host"] in message and "--wait-for-lease" in message
    assert not lease_file(tmp_path).exists()  # released
    with acquire(meta_of(tmp_path), LOCAL, uri) as second:
        assert second.run_id != first.run_id


def test_concurrent_acquires_have_one_winner(tmp_path) -> None:
    """Eight runs (threads, each with its own file handles, as separate processes have) start at once."""
    uri = str(tmp_path / "out")
    start = threading.Barrier(8)

    def contend(_: int) -> Lease | None:
        start.wait()
        try:
            return acquire(meta_of(tmp_path), LOCAL, uri)
        except LeaseHeld:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [lease for lease in pool.map(contend, range(8)) if lease is not None]
    assert len(winners) == 1
    assert json.loads(lease_file(tmp_path).read_bytes())["run_id"] == winners[0].run_id
    winners[0].release()


def test_lease_of_a_dead_run_is_taken_over(tmp_path) -> None:
    """A lease whose last heartbeat is older than the TTL (file mtime set back) is taken over at once."""
    uri = str(tmp_path / "out")
    crashed = acquire(meta_of(tmp_path), LOCAL, uri)
    crashed._stop.set()  # the heartbeat stops, as when the driver is killed
    crashed._thread.join()
    old = time.time() - LEASE_TTL_S - 5
    os.utime(lease_file(tmp_path), (old, old))
    with acquire(meta_of(tmp_path), LOCAL, uri) as successor:
        assert json.loads(lease_file(tmp_path).read_bytes())["run_id"] == successor.run_id != crashed.run_id
        with pytest.raises(LeaseLost, match=f"to run {successor.run_id} .*nothing was committed by this run"):
            crashed.renew()
        crashed.release()  # the lease is the successor's now: left in place
        assert json.loads(lease_file(tmp_path).read_bytes())["run_id"] == successor.run_id


def test_renewals_write_a_new_version_each_time(tmp_path) -> None:
    with acquire(meta_of(tmp_path), LOCAL, str(tmp_path / "out")) as lease:
        versions = {lease.token}
        for _ in range(3):
            lease.renew()
            versions.add(lease.token)
        assert len(versions) == 4 and json.loads(lease_file(tmp_path).read_bytes())["beat"] == 3
        lease.confirm(limit_s=1)


def test_unreadable_lease_is_still_a_lease(tmp_path) -> None:
    """A lease file that is not ours to parse still holds the output until it expires."""
    lease_file(tmp_path).parent.mkdir()
    lease_file(tmp_path).write_bytes(b"not json")
    with pytest.raises(LeaseHeld, match=r"another run unknown \(unreadable lease\)"):
        acquire(meta_of(tmp_path), LOCAL, str(tmp_path / "out"))
