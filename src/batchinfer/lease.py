"""One writer per output: a lease object beside the output, taken with a conditional write.

`<output>.batchinfer/lease.json` names the run that writes the output (run id, host, pid, start time,
last heartbeat). A run takes it before any heavy work with a create-if-absent write (S3 `PutObject`
with `If-None-Match: *`; a local file opened with O_CREAT|O_EXCL), refreshes it every HEARTBEAT_S
with a compare-and-swap on its ETag (`If-Match`), confirms it right before its commit and deletes it
when it ends. A lease that has not been refreshed for LEASE_TTL_S belonged to a run that died; the
next run takes it over with the same compare-and-swap, so only one can. Its age is judged on the
store's clock (the object's Last-Modified against the answer's Date header), never on ours.

Some S3-compatible servers ignore the conditional headers. A probe at start finds out; there every
lease write is checked instead: look, write, wait SETTLE_S, read back and compare. That still stops a
second run that starts seconds after the first, but two runs that start within the settle time can
both pass: a weaker guarantee (docs/reliability.md, One writer per output).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from batchinfer.config import S3Options, UserError
from batchinfer.storage import LEASE as LEASE_REQUESTS
from batchinfer.storage import Location, retry_storage, s3_client
from batchinfer.storage_errors import (ObjectMissing, StorageError, StorageMisconfigured, StoreUnreachable,
                                       from_boto)

LEASE = "lease.json"  # in Output.meta
LEASE_TTL_S = 30.0    # a lease not refreshed for this long belonged to a run that died
HEARTBEAT_S = 5.0     # how often the driver refreshes its lease
SETTLE_S = 2.0        # servers without conditional writes: wait this long before reading a write back
POLL_S = 2.0          # --wait-for-lease: how often to look again
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_log = logging.getLogger(__name__)


class LeaseHeld(UserError):
    """Another live run writes this output (exit 2)."""


class LeaseLost(RuntimeError):
    """This run no longer holds its output's lease: another run took it over. Nothing is committed."""


@dataclass(frozen=True)
class Holder:
    """Who writes the output, as the lease object says."""

    run_id: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str

    @classmethod
    def parse(cls, data: bytes) -> "Holder":
        try:
            found = json.loads(data)
            return cls(**{field.name: found[field.name] for field in fields(cls)})
        except (ValueError, KeyError, TypeError):
            return cls("unknown (unreadable lease)", "?", 0, "?", "?")

    def describe(self) -> str:
        return f"run {self.run_id} (started {self.started_at}, host {self.host}, pid {self.pid})"


@dataclass(frozen=True)
class Record:
    """The lease object as stored: its bytes, its version (ETag or digest), its age on the store's clock."""

    data: bytes
    token: str
    age_s: float


class LeaseStore(Protocol):
    """Where the lease lives. `create` and `replace` return the new version, or None when the object
    exists (create) or is no longer at version `token` (replace)."""

    conditional: bool

    def read(self) -> Record | None: ...
    def create(self, data: bytes) -> str | None: ...
    def replace(self, data: bytes, token: str) -> str | None: ...
    def delete(self, token: str) -> None: ...


class _Refused(Exception):
    """The store refused a conditional request: its condition does not hold (412, or 409 for a
    concurrent conditional write)."""


def _refused_condition(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code in _PRECONDITION_CODES or status in (409, 412)


class S3LeaseStore:
    """The lease as an S3 object, written with boto3 (pyarrow cannot send conditional headers)."""

    def __init__(self, client, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.conditional = self._honours_conditions()

    def _request(self, operation: str, key: str, **args: object) -> dict:
        """One boto3 call on `key`: a refused condition raises _Refused, any other failure a typed
        storage error (storage_errors)."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=key, **args)
        except ClientError as exc:
            if _refused_condition(exc):
                raise _Refused from None
            raise from_boto(exc, f"s3://{self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise from_boto(exc) from None

    def _refused(self, key: str, **condition: str) -> bool:
        """Whether the server refuses a write whose condition does not hold (False: it ignored it)."""
        try:
            self._request("put_object", key, Body=b"probe", **condition)
            return False
        except _Refused:
            return True
        except StorageMisconfigured as exc:
            if exc.status in (400, 501):  # a server that rejects the header outright
                return False
            raise

    def _honours_conditions(self) -> bool:
        """Pre-flight probe on an object of our own: a create-if-absent over it and a write with a wrong
        ETag must both be refused."""
        probe = f"{self.key}.probe-{uuid.uuid4().hex[:8]}"
        self._request("put_object", probe, Body=b"probe")
        try:
            return self._refused(probe, IfNoneMatch="*") and self._refused(probe, IfMatch='"0"')
        finally:
            self._request("delete_object", probe)

    def read(self) -> Record | None:
        try:
            answer = self._request("get_object", self.key)
        except ObjectMissing:
            return None
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")  # the store's clock; ours if it sends none
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
        return Record(answer["Body"].read(), answer["ETag"], (now - answer["LastModified"]).total_seconds())

    def _put(self, data: bytes, **condition: str) -> str | None:
        try:
            return self._request("put_object", self.key, Body=data, **condition)["ETag"]
        except (_Refused, ObjectMissing):
            return None

    def _verified(self, data: bytes) -> str | None:
        """Fallback: after a plain write, wait, read back; ours only if our bytes are still there."""
        time.sleep(SETTLE_S)
        found = self.read()
        return found.token if found is not None and found.data == data else None

    def create(self, data: bytes) -> str | None:
        if self.conditional:
            return self._put(data, IfNoneMatch="*")
        if self.read() is not None:
            return None
        self._put(data)
        return self._verified(data)

    def replace(self, data: bytes, token: str) -> str | None:
        if self.conditional:
            return self._put(data, IfMatch=token)
        found = self.read()
        if found is None or found.token != token:
            return None
        self._put(data)
        return self._verified(data)

    def delete(self, token: str) -> None:
        found = self.read()
        if found is None or found.token != token:
            return
        try:
            self._request("delete_object", self.key, **({"IfMatch": token} if self.conditional else {}))
        except (_Refused, ObjectMissing):
            pass


class LocalLeaseStore:
    """The lease as a local file: created with O_CREAT|O_EXCL; replaced and deleted under an flock of
    `lease.lock`, so a compare-and-swap is atomic between processes. Its version is its SHA-256."""

    conditional = True

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.lock_path = path, path.with_suffix(".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> Record | None:
        try:
            data, modified = self.path.read_bytes(), self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Record(data, hashlib.sha256(data).hexdigest(), time.time() - modified)

    def read(self) -> Record | None:
        with self._locked():
            return self._read()

    def create(self, data: bytes) -> str | None:
        with self._locked():
            try:
                handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            return hashlib.sha256(data).hexdigest()

    def replace(self, data: bytes, token: str) -> str | None:
        with self._locked():
            found = self._read()
            if found is None or found.token != token:
                return None
            staged = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            staged.write_bytes(data)
            os.replace(staged, self.path)
            return hashlib.sha256(data).hexdigest()

    def delete(self, token: str) -> None:
        with self._locked():
            found = self._read()
            if found is not None and found.token == token:
                self.path.unlink()


def lease_store(meta: Location, s3: S3Options) -> LeaseStore:
    """The lease store for an output's meta prefix; on S3, probes whether the server honours
    conditional writes. A server that refuses our writes is a UserError."""
    if meta.scheme != "s3":
        return LocalLeaseStore(Path(meta.path) / LEASE)
    bucket, prefix = meta.path.split("/", 1)
    try:
        store = S3LeaseStore(s3_client(s3, LEASE_REQUESTS), bucket, f"{prefix}/{LEASE}")
    except StoreUnreachable as exc:
        raise UserError(f"cannot reach the S3 endpoint {s3.endpoint or 'of AWS'} to write {meta.uri()}/ "
                        f"({exc}): check AWS_ENDPOINT_URL (or --s3-endpoint) and that the server is up") from None
    except StorageError as exc:
        raise UserError(f"cannot write to {meta.uri()}/ ({exc.code or exc.status}): batchinfer keeps its lease, "
                        "staging area and summary there; allow the credentials to write and delete objects "
                        "under that prefix") from None
    if not store.conditional:
        _log.warning("%s ignores conditional writes (If-None-Match, If-Match): the output lease falls back to "
                     "write, wait %.0f s and read back, which cannot tell apart two runs that start within "
                     "that time", s3.endpoint or "the S3 endpoint", SETTLE_S)
    return store


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Lease:
    """This run's hold on one output. `acquire` takes it (or says who has it); a heartbeat thread keeps
    it fresh until `release`; `confirm` proves it is still ours right before the commit."""

    def __init__(self, store: LeaseStore, output_uri: str) -> None:
        self.store = store
        self.output_uri = output_uri
        started = _now()
        self.holder = Holder(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), started, started)
        self.token: str | None = None
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = itertools.count()

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    def _data(self) -> bytes:
        """The lease's content; every write differs (`beat` counts them), so every write is a new version."""
        record = asdict(replace(self.holder, heartbeat_at=_now()))
        return json.dumps({**record, "ttl_s": LEASE_TTL_S, "beat": next(self._beats)}).encode()

    def _take(self) -> Record | None:
        """Take the lease if it is free or expired; otherwise return it (someone else's, alive)."""
        while True:
            token = self.store.create(self._data())
            if token is None:
                found = self.store.read()
                if found is None:
                    continue  # released between our two calls
                if found.age_s <= LEASE_TTL_S:
                    return found
                token = self.store.replace(self._data(), found.token)
                if token is None:
                    continue  # another run took it over first
                _log.warning("took over the lease on %s from %s: no heartbeat for %.0f s (it died)",
                             self.output_uri, Holder.parse(found.data).describe(), found.age_s)
            self.token = token
            return None

    def acquire(self, wait_s: float = 0.0) -> "Lease":
        """Take the lease, waiting up to `wait_s` for another run to finish; LeaseHeld if it does not."""
        deadline = time.monotonic() + wait_s
        while (found := self._take()) is not None:
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"{self.output_uri} is being written by another {Holder.parse(found.data).describe()}, "
                    f"last heartbeat {found.age_s:.0f} s ago: wait for it to finish, pass --wait-for-lease "
                    f"SECONDS to wait for it, or choose another --output (the lease of a run that died "
                    f"expires {LEASE_TTL_S:.0f} s after its last heartbeat)")
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._beat, name="batchinfer-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> None:
        """Refresh the lease (compare-and-swap on our version); LeaseLost when it is no longer ours."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            token = self.store.replace(self._data(), self.token or "")
            if token is None:
                found = self.store.read()
                if found is not None and Holder.parse(found.data).run_id == self.run_id:
                    token = found.token  # our own write landed, but its answer was lost and retried
                else:
                    who = Holder.parse(found.data).describe() if found else "a run that has since ended"
                    self.lost = (f"lost the lease on {self.output_uri} to {who} while this run "
                                 f"({self.run_id}) could not refresh it; nothing was committed by this run")
                    _log.warning(self.lost)
                    raise LeaseLost(self.lost)
            self.token = token

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as exc:  # noqa: BLE001 - an unreachable store: try again at the next beat
                _log.warning("could not refresh the lease on %s (%s); retrying in %.0f s",
                             self.output_uri, str(exc).splitlines()[0][:200], HEARTBEAT_S)

    def confirm(self, limit_s: float) -> None:
        """Right before committing: refresh the lease now, waiting up to `limit_s` for an unreachable
        store. LeaseLost when another run holds it."""
        retry_storage(self.renew, f"confirm the lease on {self.output_uri}", limit_s)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.lost or self.token is None:
                return
            try:
                self.store.delete(self.token)
            except Exception as exc:  # noqa: BLE001 - it expires on its own
                _log.warning("could not remove the lease on %s (%s); it expires %.0f s after its last "
                             "heartbeat", self.output_uri, str(exc).splitlines()[0][:200], LEASE_TTL_S)
            self.token = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def acquire(meta: Location, s3: S3Options, output_uri: str, wait_s: float = 0.0) -> Lease:
    """Take the lease on an output (its meta prefix `meta`) for this run; see `Lease.acquire`."""
    return Lease(lease_store(meta, s3), output_uri).acquire(wait_s)
