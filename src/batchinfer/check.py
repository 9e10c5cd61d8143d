"""`batchinfer check`: can this identity read the input and write the output? (the chart's `helm test`)

The same early checks the job runs before any work (storage.resolve/check_bucket, listing.first_images),
then one read of the first image, a probe object written and deleted under the output prefix (pyarrow,
as the job's results), and the job's lease store set up beside it (lease.lease_store: boto3 with the
job's client settings, a conditional put with If-None-Match and If-Match, and a delete), so a missing
bucket, a wrong key, a read-only role or a server that ignores conditional writes surfaces as one line
instead of a failed RayJob.
"""

from __future__ import annotations

import uuid

from batchinfer.config import S3Options
from batchinfer.lease import lease_store
from batchinfer.layout import Output
from batchinfer.listing import first_images
from batchinfer.storage import STORAGE_TIMEOUT_S, check_bucket, explain, read_bytes, resolve, write_bytes

PROBE_PREFIX = "_batchinfer-check-"  # starts with "_": Parquet readers skip it, like _SUCCESS


def check_access(input_uri: str, output_uri: str, s3: S3Options) -> str:
    """Raise UserError naming the first thing that fails; return a one-line report when all pass."""
    source, target = resolve(input_uri, s3), resolve(output_uri, s3)
    first = next(iter(first_images(source, s3, STORAGE_TIMEOUT_S, [target.path])))
    try:
        read_bytes(source.filesystem, first, s3)
    except OSError as exc:
        raise explain(exc, source.uri(first), s3) from None
    check_bucket(target, s3)
    if target.scheme == "file":  # an object store needs no directories; a local output does
        target.filesystem.create_dir(target.path, recursive=True)
    probe = target.join(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        write_bytes(target.filesystem, probe, b"")
        target.filesystem.delete_file(probe)
    except OSError as exc:
        raise explain(exc, target.uri(probe), s3) from None
    meta = Output(target, s3).meta
    lease = "honours" if lease_store(meta, s3).conditional else "IGNORES (the lease falls back to write and read back)"
    return (f"batchinfer check: ok: images under {input_uri} (read {source.uri(first)}); {output_uri} is writable; "
            f"the lease prefix {meta.uri()}/ {lease} conditional writes")
