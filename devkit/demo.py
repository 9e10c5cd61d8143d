"""The embedded default (`make demo`): a local S3 server, sample photos, real pretrained weights, one
job run on local Ray.

    python -m devkit.demo [--into demo-output]

It leaves the committed output in a local folder (the Parquet files, `_SUCCESS`, the summary and
report.html) and prints how to open them, since the server that held them stops with the demo.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer.cli import print_summary
from batchinfer.config import JobConfig, S3Options
from batchinfer.pipeline import run_job
from batchinfer.layout import META_SUFFIX, REPORT, SUMMARY
from batchinfer.storage import s3_filesystem
from devkit.samples import efficientnet_lite0_checkpoint, sample_images
from devkit.seaweed import SeaweedServer

BUCKET = "batchinfer-demo"
OUTPUT = "predictions"


def keep_locally(s3: pafs.FileSystem, into: Path) -> None:
    """Copy the committed output and its report from the demo's bucket into `into`."""
    (into / OUTPUT).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(f"{BUCKET}/{OUTPUT}", str(into / OUTPUT), source_filesystem=s3,
                    destination_filesystem=pafs.LocalFileSystem())
    for name in (REPORT, SUMMARY):
        pafs.copy_files(f"{BUCKET}/{OUTPUT}{META_SUFFIX}/{name}", str(into / name), source_filesystem=s3,
                        destination_filesystem=pafs.LocalFileSystem())


def run_demo(into: Path) -> dict:
    """Start SeaweedFS, upload samples and weights, classify them on local Ray, print, keep the output
    in `into`, stop."""
    with SeaweedServer() as server:
        print(f"local S3 server (SeaweedFS) at {server.endpoint}")
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for key, data in sample_images().items():
            client.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=data)
        client.put_object(Bucket=BUCKET, Key="models/efficientnet_lite0.pth",
                          Body=efficientnet_lite0_checkpoint())
        config = JobConfig(
            input_uri=f"s3://{BUCKET}/images/", output_uri=f"s3://{BUCKET}/{OUTPUT}/",
            model="timm:efficientnet_lite0", weights=f"s3://{BUCKET}/models/efficientnet_lite0.pth",
            device="cpu", batch_size=16,
            s3=S3Options(endpoint=server.endpoint, region="us-east-1", access_key=server.access_key,
                         secret_key=server.secret_key),
        )
        summary = run_job(config).summary
        s3 = s3_filesystem(config.s3)
        table = pq.read_table(f"{BUCKET}/{OUTPUT}/", filesystem=s3)
        print("\npredictions:")
        for row in sorted(table.to_pylist(), key=lambda r: r["path"]):
            verdict = f"{row['label']} ({row['score']:.2f})" if row["error"] is None else f"ERROR {row['error']}"
            print(f"  {row['path'].split('/images/', 1)[1]:<36} {verdict}")
        print_summary(summary)
        keep_locally(s3, into)
    where = into.resolve()
    print(f"\nkept in {where}/ (the demo's S3 server has stopped):")
    print(f"  report     open file://{where / REPORT} in a browser")
    print(f"  Parquet    {where / OUTPUT}/  e.g. python -c \"import polars; "
          f"print(polars.read_parquet('{where / OUTPUT}/*.parquet'))\"")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--into", type=Path, default=Path("demo-output"),
                        help="local folder for the output and its report (default: demo-output)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    run_demo(parser.parse_args().into)
