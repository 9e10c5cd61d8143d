"""The listing's pure parts, without Ray or an S3 server: the image filter, our own output excluded,
key ranges that cover a key space exactly once, local directories split into units, and manifests
read and checked from local files (pyarrow's LocalFileSystem)."""

from __future__ import annotations

import itertools
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchinfer.config import JobConfig, UserError
from batchinfer.listing import (AFTER_ALL, Unit, in_range, is_excluded, is_image, plan_units, ranges_from_groups,
                                splittable, unit_keys)
from batchinfer.manifests import ManifestHead, _normalize_manifest, manifest_head
from batchinfer.source import check_input
from batchinfer.storage import resolve


def test_image_filter_by_extension_in_any_case() -> None:
    assert is_image("b/in/a.JPG") and is_image("b/in/x.y/photo.tiff") and is_image("b/in/café ☕.jpeg")
    assert not is_image("b/in/notes.txt") and not is_image("b/in/jpg") and not is_image("b/in.jpg/readme")


def test_own_output_and_its_sibling_are_excluded() -> None:
    exclude = ["b/in/out", "b/in/out.batchinfer"]
    assert is_excluded("b/in/out/part-00000.parquet", exclude)
    assert is_excluded("b/in/out.batchinfer/staging/x.jpg", exclude)
    assert not is_excluded("b/in/outside.jpg", exclude) and not is_excluded("b/in/out2/a.jpg", exclude)


KEYS = sorted({
    "in/a.jpg", "in/a-b.jpg", "in/a/x.jpg", "in/a/", "in/b", "in/é.png", "in/z\U0001f600.jpg",
    *(f"in/img_{n:05d}.jpg" for n in range(0, 3000, 7)), *(f"in/{c}{n}.png" for c in "AZaz09" for n in range(3)),
})


@pytest.mark.parametrize("groups", [
    ["in/"], ["in/a", "in/b", "in/i", "in/z"], ["in/img_0", "in/img_1", "in/img_2"],
    ["in/0", "in/9", "in/A", "in/Z", "in/a", "in/a.", "in/a/", "in/img_00", "in/img_02", "in/é", "in/z"],
])
def test_key_ranges_cover_every_key_exactly_once(groups: list[str]) -> None:
    ranges = ranges_from_groups(groups)
    assert ranges[0][0] is None and ranges[-1][1] is None and len(ranges) == len(groups)
    for key in KEYS:
        owners = [index for index, (after, upto) in enumerate(ranges) if in_range(key, after, upto)]
        assert len(owners) == 1, (key, owners)


def test_random_boundaries_still_partition_the_key_space() -> None:
    chooser = random.Random(16)
    for _ in range(50):
        groups = chooser.sample(KEYS, 5) + [key[:6] for key in chooser.sample(KEYS, 3)]
        ranges = ranges_from_groups(groups)
        counts = [sum(in_range(key, after, upto) for after, upto in ranges) for key in KEYS]
        assert counts == [1] * len(KEYS)


def test_a_group_ends_after_every_key_it_prefixes() -> None:
    (_, upto), _ = ranges_from_groups(["in/img_0", "in/img_1"])
    assert upto == "in/img_0" + AFTER_ALL
    assert in_range("in/img_09999\U0010fffe.jpg", None, upto) and not in_range("in/img_1.jpg", None, upto)


def test_no_boundary_between_a_directory_and_names_it_prefixes() -> None:
    """SeaweedFS lists `a/` before `a.jpg` (by name), S3 after it (by key): never split there."""
    assert not splittable("a", ["a-", "a.", "a/"])
    assert splittable("a", ["a-", "a."]) and splittable("", ["a", "b"])


def _tree(root, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_local_directory_units_list_every_file_once(tmp_path) -> None:
    files = ["top.jpg", "notes.txt", "a/1.jpg", "a/b/2.png", "a/b/c/3.gif", "z/4.jpg", "z/y/5.jpg"]
    _tree(tmp_path / "in", files)
    options = JobConfig("x", "y").s3
    units = plan_units(resolve(str(tmp_path / "in"), options), options, storage_timeout_s=1.0)
    assert units[0] == Unit("files", str(tmp_path / "in")) and {u.kind for u in units[1:]} == {"tree"}
    listed = list(itertools.chain.from_iterable(page for unit in units for page in unit_keys(unit, None)))
    assert sorted(listed) == sorted(str(tmp_path / "in" / name) for name in files)


def test_empty_or_imageless_directory_is_one_line_before_any_work(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="found nothing under"):
        check_input(JobConfig(str(tmp_path / "empty"), "out"), resolve(str(tmp_path / "empty"), JobConfig("x", "y").s3), [])
    _tree(tmp_path / "docs", ["a.txt", "b/c.csv"])
    with pytest.raises(UserError, match="2 objects but no images"):
        check_input(JobConfig(str(tmp_path / "docs"), "out"), resolve(str(tmp_path / "docs"), JobConfig("x", "y").s3), [])


def test_check_input_gives_the_number_and_mean_size_of_the_first_images(tmp_path) -> None:
    """The decode batch is sized from these (pipeline.decode_batch); non-images and our output don't count."""
    (tmp_path / "in" / "out").mkdir(parents=True)
    for name, size in [("a.jpg", 1000), ("b.png", 3000), ("notes.txt", 10**6), ("out/c.jpg", 10**6)]:
        (tmp_path / "in" / name).write_bytes(b"x" * size)
    uri = str(tmp_path / "in")
    checked = check_input(JobConfig(uri, "out"), resolve(uri, JobConfig("x", "y").s3), [str(tmp_path / "in" / "out")])
    assert (checked.image_bytes, checked.sampled_images, checked.images.path) == (2000, 2, uri)


def _config(uri: str, **flags) -> JobConfig:
    return JobConfig(input_uri=uri, output_uri="/tmp/unused-out", **flags)


def _head(uri: str, **flags) -> ManifestHead:
    config = _config(uri, **flags)
    return manifest_head(config, resolve(uri, config.s3))


def test_parquet_csv_and_text_manifests_are_recognised(tmp_path) -> None:
    pq.write_table(pa.table({"uri": ["s3://b/in/a.jpg"], "id": [7]}), tmp_path / "list.parquet")
    head = _head(str(tmp_path / "list.parquet"), path_column="uri", key_column="id")
    assert (head.format, head.path_column, head.key_column, head.scheme) == ("parquet", "uri", "id", "s3")
    (tmp_path / "list.csv").write_text("path,name\n/data/a.jpg,first\n")
    assert _head(str(tmp_path / "list.csv")).scheme == "file"
    (tmp_path / "list.txt").write_text("\ns3://b/in/a.jpg\ns3://b/in/b.jpg\n")
    assert (_head(str(tmp_path / "list.txt")).format, _head(str(tmp_path / "list.txt")).path_column) == ("text", "text")


@pytest.mark.parametrize(("content", "flags", "message"), [
    ("uri,name\ns3://b/a.jpg,a\n", {}, "has no column 'path' (columns: uri, name): name the URI column with --path-column"),
    ("path\ns3://b/a.jpg\n", {"key_column": "id"}, "has no --key-column 'id' (columns: path)"),
    ("path\nrelative/a.jpg\n", {}, "is not an object URI"),
    ("path\n", {}, "lists no objects"),
])
def test_wrong_manifest_is_one_line(tmp_path, content: str, flags: dict, message: str) -> None:
    (tmp_path / "list.csv").write_text(content)
    with pytest.raises(UserError, match=re.escape(message)):
        _head(str(tmp_path / "list.csv"), **flags)


def test_missing_manifest_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match="no such file"):
        _head(str(tmp_path / "absent.parquet"))


def test_manifest_rows_become_paths_and_keys() -> None:
    head = ManifestHead("csv", ["list.csv"], "uri", "id", "s3")
    table = _normalize_manifest(pa.table({"uri": ["s3://b/in/a.jpg", "", "s3://b/out/x.jpg", "file:///d/c.png"],
                                          "id": ["1", "2", "3", None]}),
                                head=head, exclude_prefixes=["b/out"], skipped=None)
    assert table.to_pylist() == [{"path": "s3://b/in/a.jpg", "key": "1"}, {"path": "/d/c.png", "key": None}]


def test_inventory_rows_are_decoded_and_filtered_like_a_listing() -> None:
    head = ManifestHead("inventory-csv", ["x.csv.gz"], None, None, "s3", ["Bucket", "Key", "IsLatest", "IsDeleteMarker"])
    table = _normalize_manifest(pa.table({
        "Bucket": ["b", "b", "b", "b", "b"],
        "Key": ["in/caf%C3%A9+1.jpg", "in/notes.txt", "in/old.jpg", "in/gone.jpg", "in/a%2Bb.png"],
        "IsLatest": ["true", "true", "false", "true", "true"],
        "IsDeleteMarker": ["false", "false", "false", "true", "false"]}), head=head, exclude_prefixes=[], skipped=None)
    assert table["path"].to_pylist() == ["s3://b/in/café 1.jpg", "s3://b/in/a+b.png"]
