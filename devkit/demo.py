"""The embedded default (`make demo`): a local S3 server, sample photos, real pretrained weights, one
job run on local Ray.

    python -m devkit.demo
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from batchinfer.cli import print_summary
from batchinfer.config import JobConfig, S3Options
from batchinfer.pipeline import run_job
from batchinfer.storage import s3_filesystem
from devkit.samples import efficientnet_lite0_checkpoint, sample_images
from devkit.seaweed import SeaweedServer

BUCKET = "batchinfer-demo"


def run_demo() -> dict:
    """Start SeaweedFS, upload samples and weights, classify them on local Ray, print, stop."""
    with SeaweedServer() as server:
        print(f"local S3 server (SeaweedFS) at {server.endpoint}")
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for key, data in sample_images().items():
            client.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=data)
        client.put_object(Bucket=BUCKET, Key="models/efficientnet_lite0.pth",
                          Body=efficientnet_lite0_checkpoint())
        config = JobConfig(
            input_uri=f"s3://{BUCKET}/images/", output_uri=f"s3://{BUCKET}/predictions/",
            model="timm:efficientnet_lite0", weights=f"s3://{BUCKET}/models/efficientnet_lite0.pth",
            device="cpu", batch_size=16,
            s3=S3Options(endpoint=server.endpoint, region="us-east-1", access_key=server.access_key,
                         secret_key=server.secret_key),
        )
        summary = run_job(config).summary
        table = pq.read_table(f"{BUCKET}/predictions/", filesystem=s3_filesystem(config.s3))
        print("\npredictions:")
        for row in sorted(table.to_pylist(), key=lambda r: r["path"]):
            verdict = f"{row['label']} ({row['score']:.2f})" if row["error"] is None else f"ERROR {row['error']}"
            print(f"  {row['path'].split('/images/', 1)[1]:<36} {verdict}")
        print_summary(summary)
        print(f"Parquet written to s3://{BUCKET}/predictions/ (the local server stops now)")
        return summary


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    run_demo()
