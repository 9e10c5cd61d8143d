"""The distributed listing and manifest input, against the real S3 server (SeaweedFS) and the real
two-node Ray cluster: nested and flat prefixes listed exactly once, --limit ending the listing early,
manifests (Parquet, CSV, text, S3 Inventory CSV and Parquet) with the key column in the output."""

from __future__ import annotations

import gzip
import io
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchinfer.config import JobConfig
from batchinfer.pipeline import connect_ray, run_job
from batchinfer.listing import count_skipped, plan_units, skipped_counter
from batchinfer.source import check_input, input_dataset
from batchinfer.storage import resolve, s3_filesystem
from tests.support import run_cli

BUCKET = "listing"
FLAT = 3000  # tiny objects in one flat prefix, every fourth not an image
NESTED = ["in/a.jpg", "in/a-b.jpg", "in/a/x.jpg", "in/a/y/z.png", "in/b/c/d/e/f.jpg", "in/b/c/readme.txt",
          "in/2024/01/01/p.jpg", "in/2024/01/02/q.JPG", "in/2024.jpg", "in/é/ü.webp", "in/top.gif"]


def flat_keys() -> list[str]:
    return [f"in/flat/img_{n:05d}.{'txt' if n % 4 == 3 else 'jpg'}" for n in range(FLAT)]


@pytest.fixture(scope="module")
def bucket(s3) -> list[str]:
    """The input's keys (tiny objects: listing never reads them)."""
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    keys = NESTED + flat_keys()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=b"x"), keys))
    return keys


def listed_paths(config: JobConfig, skipped=None) -> list[str]:
    connect_ray()
    dataset = input_dataset(config, resolve(config.input_uri, config.s3), [], skipped)
    return [path for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow")
            for path in batch["path"].to_pylist()]


def images(keys: list[str]) -> list[str]:
    return sorted(f"s3://{BUCKET}/{key}" for key in keys if not key.endswith(".txt"))


def test_nested_and_flat_prefixes_are_listed_exactly_once(ray_cluster, bucket, s3_options) -> None:
    config = JobConfig(input_uri=f"s3://{BUCKET}/in/", output_uri=f"s3://{BUCKET}/out/", s3=s3_options)
    units = plan_units(resolve(config.input_uri, s3_options), s3_options, storage_timeout_s=30)
    flat_ranges = [unit for unit in units if unit.directory == "in/flat/" and unit.kind == "range"]
    assert len(flat_ranges) >= 3, units  # the flat prefix is split into key ranges (StartAfter)
    assert len({unit.directory for unit in units}) >= 2, units  # and the plan descends into prefixes
    skipped = skipped_counter()
    paths = listed_paths(config, skipped)
    assert len(paths) == len(set(paths)) and sorted(paths) == images(bucket)
    assert count_skipped(skipped) == sum(key.endswith(".txt") for key in bucket)


def test_limit_ends_the_listing_early(ray_cluster, bucket, s3_options) -> None:
    """With --limit 5 every listing task stops at 5 images, and Ray Data's limit stops the tasks: the
    non-images passed on the way (counted per unit, never collected) are a small share of the input's."""
    config = JobConfig(input_uri=f"s3://{BUCKET}/in/", output_uri=f"s3://{BUCKET}/out/", limit=5, s3=s3_options)
    skipped = skipped_counter()
    paths = listed_paths(config, skipped)
    assert len(paths) == 5 and set(paths) <= set(images(bucket))
    non_images = sum(key.endswith(".txt") for key in bucket)
    assert count_skipped(skipped) < non_images / 3, count_skipped(skipped)


def test_the_first_pages_give_the_number_and_mean_size_of_images(s3, bucket, s3_options) -> None:
    """From the listing's own Size fields (no object read), over up to SAMPLE_PAGES pages: what
    pipeline.decode_batch sizes decode tasks by."""
    client = s3.client()
    for key, size in [("sized/a.jpg", 100), ("sized/b/c.jpg", 300), ("sized/notes.txt", 10**5)]:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * size)
    for prefix, images, mean in [("sized/", 2, 200), ("in/flat/", FLAT * 3 // 4, 1)]:  # flat: three pages
        config = JobConfig(input_uri=f"s3://{BUCKET}/{prefix}", output_uri=f"s3://{BUCKET}/out/", s3=s3_options)
        checked = check_input(config, resolve(config.input_uri, s3_options), [])
        assert (checked.sampled_images, checked.image_bytes) == (images, mean)


PHOTOS = ["photos/coffee.png", "photos/chelsea.png", "photos/rocket.jpg"]


def put(s3, key: str, data: bytes) -> str:
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_parquet_manifest_key_column_reaches_the_output(ray_cluster, s3, samples, s3_options) -> None:
    uris = [samples["images"] + photo for photo in PHOTOS]
    manifest = put(s3, "manifests/list.parquet", parquet_bytes(pa.table({"uri": uris, "id": [11, 22, 33]})))
    config = JobConfig(input_uri=manifest, output_uri=f"s3://{BUCKET}/out/manifest/", model="resnet18",
                       weights="none", top_k=2, path_column="uri", key_column="id", s3=s3_options)
    summary = run_job(config).summary
    prefix = config.output_uri.removeprefix("s3://").rstrip("/")
    table = pq.read_table(prefix, filesystem=s3_filesystem(s3_options))
    assert summary["rows"] == table.num_rows == 3
    assert table.schema.field("key").type == pa.string()
    assert sorted(zip(table["path"].to_pylist(), table["key"].to_pylist())) == sorted(zip(uris, ["11", "22", "33"]))
    assert table["error"].null_count == 3


def test_csv_and_text_manifests_list_their_rows(ray_cluster, s3, samples, s3_options) -> None:
    uris = [samples["images"] + photo for photo in PHOTOS]
    csv = put(s3, "manifests/list.csv", ("path,name\n" + "".join(f"{uri},n{i}\n" for i, uri in enumerate(uris))).encode())
    text = put(s3, "manifests/list.txt", ("\n".join(uris) + "\n\n").encode())
    with_key = JobConfig(input_uri=csv, output_uri="s3://x/y/", key_column="name", s3=s3_options)
    connect_ray()
    rows = input_dataset(with_key, resolve(csv, s3_options), []).take_all()
    assert sorted((row["path"], row["key"]) for row in rows) == sorted(zip(uris, ["n0", "n1", "n2"]))
    assert sorted(listed_paths(JobConfig(input_uri=text, output_uri="s3://x/y/", s3=s3_options))) == sorted(uris)


def test_s3_inventory_reports_csv_and_parquet(ray_cluster, s3, bucket, s3_options) -> None:
    """An inventory of the bucket as AWS writes it: manifest.json -> data files in the destination
    bucket; CSV gzipped without a header, keys URL-encoded; Parquet with lower-case column names."""
    keys = [key for key in bucket if key.startswith("in/") and "/flat/" not in key]
    csv_rows = "".join(f'"{BUCKET}","{quote_plus(key, safe="/")}","1","true"\n' for key in keys)
    put(s3, "inventory/data/part-1.csv.gz", gzip.compress(csv_rows.encode()))
    put(s3, "inventory/data/part-1.parquet", parquet_bytes(pa.table({"bucket": [BUCKET] * len(keys), "key": keys})))
    expected = images(keys)
    for file_format, data_key, schema in (("CSV", "inventory/data/part-1.csv.gz", "Bucket, Key, Size, IsLatest"),
                                          ("Parquet", "inventory/data/part-1.parquet", "message s3.inventory {}")):
        manifest = {"sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{BUCKET}", "version": "2016-11-30",
                    "fileFormat": file_format, "fileSchema": schema,
                    "files": [{"key": data_key, "size": 1, "MD5checksum": "0"}]}
        uri = put(s3, f"inventory/{file_format}/manifest.json", json.dumps(manifest).encode())
        skipped = skipped_counter()
        paths = listed_paths(JobConfig(input_uri=uri, output_uri="s3://x/y/", s3=s3_options), skipped)
        assert sorted(paths) == expected, file_format
        assert count_skipped(skipped) == len(keys) - len(expected)


@pytest.mark.parametrize(("content", "flags", "needle"), [
    (b"uri,name\ns3://listing/in/a.jpg,a\n", [], "has no column 'path' (columns: uri, name)"),
    (b"path\ns3://listing/in/a.jpg\n", ["--key-column", "id"], "has no --key-column 'id'"),
    (b"path\nin/a.jpg\n", [], "is not an object URI"),
])
def test_bad_manifest_is_one_line_and_exit_2(s3, bucket, cli_env, content: bytes, flags: list[str], needle: str) -> None:
    manifest = put(s3, "manifests/bad.csv", content)
    result = run_cli(["run", "--input", manifest, "--output", f"s3://{BUCKET}/out/bad/", *flags], cli_env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr, result.stderr
