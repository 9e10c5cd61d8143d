"""Every bad input gets a row and the job exits 0; the run never prints or writes its credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.samples import efficientnet_lite0_checkpoint
from tests.reliability.catalog import NON_IMAGES, bad_input_catalog
from tests.reliability.conftest import Driver, job_env, keys, meta, read_output, upload
from tests.support import SECRET

BUCKET = "catalog"
OUTPUT = "predictions/"


@pytest.fixture(scope="module")
def catalog_run(store, cluster, tmp_path_factory):
    """The pretrained EfficientNet-Lite0 over the catalog, through the CLI, with a known secret in the
    environment of the driver and of every Ray node."""
    catalog = bad_input_catalog()
    upload(store, BUCKET, {f"images/{name}": case.data for name, case in catalog.items()}
           | {f"images/{name}": data for name, data in NON_IMAGES.items()}
           | {"models/lite0.pth": efficientnet_lite0_checkpoint()})
    driver = Driver(["--input", f"s3://{BUCKET}/images/", "--output", f"s3://{BUCKET}/{OUTPUT}",
                     "--model", "timm:efficientnet_lite0", "--weights", f"s3://{BUCKET}/models/lite0.pth",
                     "--batch-size", "8", "--rows-per-file", "7"],
                    job_env(store, cluster), tmp_path_factory.mktemp("catalog-driver"))
    returncode = driver.wait()
    assert returncode == 0, driver.stderr[-4000:]
    return catalog, driver, read_output(store, BUCKET, OUTPUT)


def test_every_bad_input_gets_one_row(catalog_run) -> None:
    catalog, _, (table, summary, _) = catalog_run
    rows = {row["path"].removeprefix(f"s3://{BUCKET}/images/"): row for row in table.to_pylist()}
    assert sorted(rows) == sorted(catalog) and table.num_rows == len(catalog)
    for name, case in catalog.items():
        row = rows[name]
        if case.classified:
            assert row["error"] is None and row["label"] and len(row["topk_labels"]) == 5, name
        else:
            assert row["error"] and row["label"] is None and row["score"] is None, name
    assert summary["rows"] == len(catalog) and summary["skipped_non_images"] == len(NON_IMAGES)
    assert summary["errors"] == sum(not case.classified for case in catalog.values())


def test_error_rows_say_what_is_wrong(catalog_run) -> None:
    _, _, (table, summary, _) = catalog_run
    errors = {row["path"].rsplit("/", 1)[1]: row for row in table.to_pylist() if row["error"]}
    expected = {"zero-bytes.jpg": ("empty", "empty file"), "truncated.jpg": ("decode", "truncated"),
                "random-bytes.jpg": ("not_an_image", "cannot identify image"),
                "text-file.png": ("not_an_image", "cannot identify image"),
                "bomb.png": ("too_large", "--max-image-pixels")}
    assert sorted(errors) == sorted(expected)
    for name, (kind, words) in expected.items():
        row = errors[name]
        assert row["error_kind"] == kind and words in row["error"] and " object at 0x" not in row["error"], row
    kinds = [kind for kind, _ in expected.values()]
    assert summary["errors_by_kind"] == {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def test_odd_formats_are_decoded_faithfully(catalog_run) -> None:
    """The same coffee photo, stored in awkward ways, is still an espresso (real pretrained weights)."""
    _, _, (table, _, _) = catalog_run
    labels = {row["path"].rsplit("/", 1)[1]: row["label"] for row in table.to_pylist()}
    for name in ("cmyk.jpg", "exif-rotated.jpg", "photo.webp", "large-valid.jpg", "sixteen-bit.png",
                 "my photo (1).JPG", "café ☕ 東京.jpeg", "multipage.tif"):
        assert labels[name] == "espresso", name


def test_committed_layout(catalog_run, store) -> None:
    """Only part files and `_SUCCESS` at the output prefix; the summary beside it lists the part files
    with row counts; no staging left."""
    _, _, (table, summary, names) = catalog_run
    parts = sorted(name.removeprefix(OUTPUT) for name in names if "/part-" in "/" + name)
    assert [f["name"] for f in summary["files"]] == parts and parts
    assert sum(f["rows"] for f in summary["files"]) == table.num_rows
    assert sorted(names) == sorted([OUTPUT + "_SUCCESS", *(OUTPUT + part for part in parts)])
    assert not keys(store, BUCKET, meta(OUTPUT) + "staging/")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:  # sockets, files removed while we walk
                continue
    return found


def test_credentials_are_never_printed_or_written(catalog_run, store, cluster) -> None:
    """The secret is in the driver's and every node's environment; it must appear in no console line,
    no Ray log (driver, raylet, workers, actors, GCS) and no output object. (That the chart renders no
    secret value is tested in tests/chart/test_values_rules.py.)"""
    _, driver, (_, _, names) = catalog_run
    assert SECRET not in driver.stdout and SECRET not in driver.stderr
    logs = list(cluster.workdir.rglob("*.log")) + list(cluster.workdir.rglob("*.out"))
    assert len(logs) > 10  # the search really covers the session's logs
    assert _files_containing(cluster.workdir, SECRET.encode()) == []
    client = store.client()
    for name in names + keys(store, BUCKET, meta(OUTPUT)):  # the part files, the summary beside them
        assert SECRET.encode() not in client.get_object(Bucket=BUCKET, Key=name)["Body"].read(), name
