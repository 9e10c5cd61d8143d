"""Seed and read the kind run's S3 bucket (run with the project venv's Python).

    python k8s/kind/s3seed.py seed --endpoint http://127.0.0.1:18333   # bucket, sample photos, weights
    python k8s/kind/s3seed.py show --endpoint http://127.0.0.1:18333   # print the Parquet rows
    python k8s/kind/s3seed.py show --endpoint ... --output predictions/<runId>/   # a run's own prefix

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. The photos and the pretrained
EfficientNet-Lite0 checkpoint are the ones `make demo` uses (devkit.samples, no internet needed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # devkit, from the repository root

BUCKET = "batchinfer"


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))


def seed(endpoint: str) -> None:
    from devkit.samples import efficientnet_lite0_checkpoint, sample_images

    client = _client(endpoint)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    images = sample_images()
    for key, data in images.items():
        client.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=data)
    client.put_object(Bucket=BUCKET, Key="models/efficientnet_lite0.pth", Body=efficientnet_lite0_checkpoint())
    print(f"uploaded {len(images)} images to s3://{BUCKET}/images/ and the model to s3://{BUCKET}/models/")


def show(endpoint: str, output: str = "predictions/") -> int:
    import pyarrow.parquet as pq
    from pyarrow import fs

    client = _client(endpoint)
    output = output.rstrip("/") + "/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=output).get("Contents", [])]
    if f"{output}_SUCCESS" not in keys:
        print(f"no _SUCCESS under s3://{BUCKET}/{output} (found: {keys})", file=sys.stderr)
        return 1
    summary_key = f"{output.rstrip('/')}.batchinfer/summary.json"
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    s3 = fs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[1], scheme=endpoint.split("://", 1)[0],
                         access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                         region=os.environ.get("AWS_REGION", "us-east-1"))
    files = [k for k in keys if k.endswith(".parquet")]
    rows = []
    for key in files:
        rows += pq.read_table(f"{BUCKET}/{key}", filesystem=s3).to_pylist()
    for row in sorted(rows, key=lambda r: r.get("path", "")):
        print({k: v for k, v in row.items() if k in ("path", "label", "score", "error")})
    print(f"{len(rows)} rows in {len(files)} Parquet files; summary.json: {json.dumps(summary)[:400]}")
    return 0 if rows else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["seed", "show"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--output", default="predictions/",
                        help=f"show: the run's output prefix in s3://{BUCKET}/ (default predictions/)")
    args = parser.parse_args()
    if args.command == "seed":
        seed(args.endpoint)
        return 0
    return show(args.endpoint, args.output)


if __name__ == "__main__":
    sys.exit(main())
