"""Every kind of input completes on one 2-CPU node, where the inference actor holds 1.5 of the CPUs:
a prefix, a local directory, CSV, Parquet and text manifests, S3 Inventory reports (CSV and Parquet).
Each stage's tasks must fit beside the actor (a read task at Ray Data's default of 1 CPU never starts
there, and the job waits forever). Real parts: SeaweedFS, a one-node Ray cluster started with
`ray start --num-cpus=2`, photos from scikit-image."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from batchinfer.config import JobConfig
from batchinfer.pipeline import run_job
from batchinfer.storage import s3_filesystem
from tests.support import BIN, LocalRayCluster, jobs_on, photo_dir, start_cluster

pytestmark = pytest.mark.slow  # seven whole jobs, about 3 minutes: make test-slow
BUCKET = "kinds"
PHOTOS = ["coffee.png", "chelsea.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def two_cpu_node(s3) -> LocalRayCluster:
    """A one-node Ray cluster of 2 CPUs; RAY_ADDRESS points at it for this module, then back."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = start_cluster(Path(f"/tmp/bi-2cpu-{os.getpid()}"),
                            head_params=["--num-cpus=2", "--object-store-memory=500000000"], worker_params=[],
                            env={**s3.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    with jobs_on(cluster):
        yield cluster
        ray.shutdown()
    cluster.stop()


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory) -> dict[str, str]:
    """Each kind of input, naming the same three photos (uploaded under photos/)."""
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for name in PHOTOS:
        client.put_object(Bucket=BUCKET, Key=f"photos/{name}", Body=(photo_dir() / name).read_bytes())
    uris = [f"s3://{BUCKET}/photos/{name}" for name in PHOTOS]

    def put(key: str, data: bytes) -> str:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"

    def parquet(table: pa.Table) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    local = tmp_path_factory.mktemp("local-photos")
    for name in PHOTOS:
        shutil.copy(photo_dir() / name, local / name)
    kinds = {
        "prefix": f"s3://{BUCKET}/photos/",
        "local directory": str(local),
        "csv": put("manifests/list.csv", ("path\n" + "".join(f"{uri}\n" for uri in uris)).encode()),
        "parquet": put("manifests/list.parquet", parquet(pa.table({"path": uris}))),
        "text": put("manifests/list.txt", "\n".join(uris).encode()),
    }
    keys = [f"photos/{name}" for name in PHOTOS]
    put("inventory/data/part-1.csv.gz", gzip.compress("".join(f'"{BUCKET}","{key}"\n' for key in keys).encode()))
    put("inventory/data/part-1.parquet", parquet(pa.table({"bucket": [BUCKET] * len(keys), "key": keys})))
    for file_format, data_key, schema in (("CSV", "inventory/data/part-1.csv.gz", "Bucket, Key"),
                                          ("Parquet", "inventory/data/part-1.parquet", "message s3.inventory {}")):
        manifest = {"sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{BUCKET}", "version": "2016-11-30",
                    "fileFormat": file_format, "fileSchema": schema,
                    "files": [{"key": data_key, "size": 1, "MD5checksum": "0"}]}
        kinds[f"inventory {file_format}"] = put(f"inventory/{file_format}/manifest.json", json.dumps(manifest).encode())
    return kinds


@pytest.mark.parametrize("kind", ["prefix", "local directory", "csv", "parquet", "text", "inventory CSV",
                                  "inventory Parquet"])
def test_every_input_kind_completes_on_a_2_cpu_node(two_cpu_node, inputs, s3_options, kind: str) -> None:
    output = f"s3://{BUCKET}/out/{kind.replace(' ', '-')}/"
    config = JobConfig(input_uri=inputs[kind], output_uri=output, model="resnet18", weights="none", top_k=1,
                       s3=s3_options)
    pool = ThreadPoolExecutor(1)
    try:  # a job that waits forever fails here (the module's ray.shutdown then ends it)
        summary = pool.submit(run_job, config).result(timeout=600).summary
    finally:
        pool.shutdown(wait=False)
    assert summary["device"] == "cpu" and summary["inference_actors"] == 1
    table = pq.read_table(output.removeprefix("s3://").rstrip("/"), filesystem=s3_filesystem(s3_options))
    assert sorted(Path(path).name for path in table["path"].to_pylist()) == sorted(PHOTOS)
    assert summary["rows"] == 3 and table["error"].null_count == 3
