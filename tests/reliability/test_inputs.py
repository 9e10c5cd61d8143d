"""The inputs real users have, end to end through the CLI on moto's S3 server (which keeps keys verbatim
and archives objects as AWS S3 does; SeaweedFS folds `//` into `/`): keys with an empty segment, a
108 MP photo, and bad objects, each with the error kind it must get.
"""

from __future__ import annotations

import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from devkit.samples import efficientnet_lite0_checkpoint
from tests.reliability.catalog import PHOTOS
from tests.reliability.conftest import Driver, job_env

BUCKET = "real-inputs"
OUTPUT = "predictions/"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def inputs() -> dict[str, tuple[bytes, str | None]]:
    """Object key -> (bytes, the error kind its row must have; None: classified as espresso)."""
    coffee = Image.open(PHOTOS / "coffee.png").convert("RGB")
    jpeg = encode(coffee, "JPEG", quality=90)
    width, height = coffee.size
    four_thirds = coffee.crop(((width - height * 4 // 3) // 2, 0, (width + height * 4 // 3) // 2, height))
    return {
        "in//a.jpg": (jpeg, None),                     # an empty segment: valid on AWS S3 and moto
        "in/x//y/b.jpg": (jpeg, None),
        "in/large/12000x9000.jpg": (encode(four_thirds.resize((12_000, 9_000)), "JPEG", quality=85), None),
        "in/bad/truncated.jpg": (jpeg[: len(jpeg) // 3], "decode"),
        "in/bad/empty.jpg": (b"", "empty"),
        "in/bad/text.jpg": (b"this is a text file, not a JPEG\n" * 20, "not_an_image"),
        "in/bad/bomb.png": (encode(Image.new("1", (12_000, 10_000)), "PNG"), "too_large"),
        "in/bad/archived.jpg": (jpeg, "read"),           # stored in GLACIER: GetObject is refused
    }


@pytest.fixture(scope="module")
def moto_run(store, cluster, tmp_path_factory):
    """The pretrained EfficientNet-Lite0 over the inputs, from and to moto, on the reliability cluster."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto",
                          aws_secret_access_key="moto")
    client.create_bucket(Bucket=BUCKET)
    expected = inputs()
    for key, (data, kind) in expected.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data, StorageClass="GLACIER" if "archived" in key
                          else "STANDARD")
    client.put_object(Bucket=BUCKET, Key="models/lite0.pth", Body=efficientnet_lite0_checkpoint())
    assert sorted(obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET, Prefix="in/")["Contents"]) \
        == sorted(expected)  # moto keeps every key verbatim
    env = job_env(store, cluster) | {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "moto",
                                     "AWS_SECRET_ACCESS_KEY": "moto"}
    driver = Driver(["--input", f"s3://{BUCKET}/in/", "--output", f"s3://{BUCKET}/{OUTPUT}",
                     "--model", "timm:efficientnet_lite0", "--weights", f"s3://{BUCKET}/models/lite0.pth",
                     "--batch-size", "8"], env, tmp_path_factory.mktemp("moto-driver"))
    returncode = driver.wait()
    assert returncode == 0, driver.stderr[-4000:]
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=OUTPUT)["Contents"]]
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
              for key in sorted(keys) if key.endswith(".parquet")]
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=OUTPUT.rstrip("/") + ".batchinfer/summary.json")["Body"].read())
    yield expected, pa.concat_tables(tables), summary, driver
    server.stop()


def test_every_input_has_its_row_under_its_real_key(moto_run) -> None:
    expected, table, summary, _ = moto_run
    rows = {row["path"]: row for row in table.to_pylist()}
    assert sorted(rows) == sorted(f"s3://{BUCKET}/{key}" for key in expected) and table.num_rows == len(expected)
    assert summary["rows"] == len(expected)


def test_keys_with_empty_segments_and_large_photos_are_classified(moto_run) -> None:
    expected, table, _, _ = moto_run
    rows = {row["path"]: row for row in table.to_pylist()}
    for key, (_, kind) in expected.items():
        if kind is None:
            row = rows[f"s3://{BUCKET}/{key}"]
            assert row["error"] is None and row["error_kind"] is None and row["label"] == "espresso", row


def test_bad_inputs_get_their_error_kind(moto_run) -> None:
    expected, table, summary, driver = moto_run
    rows = {row["path"]: row for row in table.to_pylist()}
    for key, (_, kind) in expected.items():
        if kind is not None:
            row = rows[f"s3://{BUCKET}/{key}"]
            assert row["error_kind"] == kind and row["error"] and row["label"] is None, row
            assert " object at 0x" not in row["error"], row["error"]
    assert "storage class" in rows[f"s3://{BUCKET}/in/bad/archived.jpg"]["error"]  # S3's InvalidObjectState
    kinds = [kind for _, kind in expected.values() if kind is not None]
    assert summary["errors_by_kind"] == {kind: kinds.count(kind) for kind in kinds}
    assert summary["errors"] == len(kinds)
    assert f"errors {len(kinds)} (" in " ".join(driver.stdout.split())  # the printed summary names the kinds
