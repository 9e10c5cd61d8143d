"""The manifest datasource: `--input` ending in `.parquet`, `.csv`, `.txt` or `manifest.json` names a
table of objects (a list of URIs, or an S3 Inventory report) instead of a prefix to list. The driver
reads its schema and first rows (`manifest_head`: wrong columns or values are one-line UserErrors);
light Ray tasks read the rest with pyarrow (`manifest_dataset`), and each batch becomes the rows a
listing gives (`path`, and `key` with --key-column).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import unquote_plus, urlparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from batchinfer import columns as col
from batchinfer.config import JobConfig, UserError
from batchinfer.listing import LIST_TASK_CPUS, is_excluded, is_image
from batchinfer.storage import Location, check_bucket, explain, read_bytes

MANIFEST_SUFFIXES = (".parquet", ".csv", ".txt", "manifest.json")


def is_manifest(uri: str) -> bool:
    """True when `--input` names a manifest (by its suffix) rather than a prefix to list."""
    return uri.lower().endswith(MANIFEST_SUFFIXES)


@dataclass(frozen=True)
class ManifestHead:
    """What the driver learns from a manifest before any heavy work."""

    format: str                 # parquet, csv, text, or inventory-csv / inventory-parquet
    files: list[str]            # the data files (filesystem paths)
    path_column: str | None     # plain manifests: the URI column
    key_column: str | None
    scheme: str                 # of the listed objects: s3 or file
    inventory_columns: list[str] | None = None  # S3 Inventory CSV: column names from fileSchema


def _uri_scheme(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme == "s3" and parsed.netloc:
        return "s3"
    if parsed.scheme == "file" or (not parsed.scheme and value.startswith("/")):
        return "file"
    return None


def _manifest_error(config: JobConfig, problem: str) -> UserError:
    return UserError(f"--input {config.input_uri}: {problem}")


def _inventory_head(config: JobConfig, source: Location) -> ManifestHead:
    """An S3 Inventory report: manifest.json names the data files (CSV without header, columns from
    fileSchema, keys URL-encoded; or Parquet) in the destination bucket."""
    try:
        manifest = json.loads(read_bytes(source.filesystem, source.path))
        file_format = manifest["fileFormat"].lower()
        keys = [entry["key"] for entry in manifest["files"]]
        destination = manifest["destinationBucket"].rsplit(":", 1)[-1]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _manifest_error(config, f"not an S3 Inventory manifest.json ({type(exc).__name__}: {exc}); a "
                              "manifest.json needs fileFormat, fileSchema, destinationBucket and files[].key"
                              ) from None
    if source.scheme != "s3":
        raise _manifest_error(config, "an S3 Inventory manifest.json is read from S3, where its data files are")
    files = [f"{destination}/{key}" for key in keys]
    if file_format == "csv":
        columns = [name.strip() for name in manifest.get("fileSchema", "").split(",")]
        if "Bucket" not in columns or "Key" not in columns:
            raise _manifest_error(config, f"its fileSchema {manifest.get('fileSchema')!r} has no Bucket and Key")
        return ManifestHead("inventory-csv", files, None, None, "s3", columns)
    if file_format == "parquet":
        return ManifestHead("inventory-parquet", files, None, None, "s3")
    raise _manifest_error(config, f"S3 Inventory fileFormat {manifest['fileFormat']!r} is not supported: "
                          "configure the inventory as CSV or Parquet")


def manifest_head(config: JobConfig, source: Location) -> ManifestHead:
    """Read a manifest's schema and first value on the driver; wrong columns or values -> UserError."""
    check_bucket(source, config.s3)
    try:
        info = source.filesystem.get_file_info(source.path)
    except (OSError, ValueError) as exc:
        raise explain(exc, source.uri(), config.s3) from None
    if info.type != pafs.FileType.File:
        raise _manifest_error(config, "no such file: give the URI of a .parquet, .csv or .txt list of "
                              "object URIs, or of an S3 Inventory manifest.json")
    lower = config.input_uri.lower()
    if lower.endswith("manifest.json"):
        if config.path_column or config.key_column:
            raise _manifest_error(config, "an S3 Inventory report takes no --path-column/--key-column")
        return _inventory_head(config, source)
    try:
        if lower.endswith(".parquet"):
            file_format = "parquet"
            first = next(pq.ParquetFile(source.filesystem.open_input_file(source.path)).iter_batches(10), None)
            table = pa.Table.from_batches([first]) if first is not None else pa.table({})
        elif lower.endswith(".csv"):
            file_format = "csv"
            with source.filesystem.open_input_stream(source.path) as stream:
                reader = pacsv.open_csv(stream)
                first = next(iter(reader), None)
                table = pa.Table.from_batches([first]) if first is not None else reader.schema.empty_table()
        else:
            file_format = "text"
            lines = read_bytes(source.filesystem, source.path)[:65536].decode(errors="replace").splitlines()
            table = pa.table({"text": [line.strip() for line in lines if line.strip()][:10]})
    except (OSError, pa.ArrowInvalid) as exc:
        raise _manifest_error(config, f"cannot be read as {lower.rsplit('.', 1)[-1]} "
                              f"({str(exc).splitlines()[0][:200]})") from None
    columns = table.column_names
    if file_format == "text":
        if config.key_column or config.path_column:
            raise _manifest_error(config, "a .txt list has one URI per line and no columns: use a .csv or "
                                  ".parquet file for --path-column/--key-column")
        path_column = "text"
    else:
        path_column = config.path_column or (col.PATH if col.PATH in columns else
                                             columns[0] if len(columns) == 1 else None)
        if path_column not in columns:
            raise _manifest_error(config, f"has no column {config.path_column or col.PATH!r} (columns: "
                                  f"{', '.join(columns) or 'none'}): name the URI column with --path-column")
        if config.key_column and config.key_column not in columns:
            raise _manifest_error(config, f"has no --key-column {config.key_column!r} (columns: "
                                  f"{', '.join(columns)})")
    values = [value for value in table[path_column].to_pylist() if value]
    if not values:
        raise _manifest_error(config, "lists no objects")
    scheme = _uri_scheme(str(values[0]))
    if scheme is None:
        raise _manifest_error(config, f"its first entry {str(values[0])[:200]!r} is not an object URI: list "
                              "s3://BUCKET/KEY URIs or absolute local paths")
    return ManifestHead(file_format, [source.path], path_column, config.key_column, scheme)


def _normalize_manifest(batch: pa.Table, *, head: ManifestHead, exclude_prefixes: list[str],
                        skipped: "ray.actor.ActorHandle | None") -> pa.Table:
    """Manifest rows -> `path` (as a listing gives it) and `key`. Plain lists keep every row they name;
    S3 Inventory rows are filtered like a listing (images only, no delete markers or old versions)."""
    keys_out = None
    if head.format.startswith("inventory"):
        names = {name.lower().replace("_", ""): name for name in batch.column_names}
        rows = zip(batch[names["bucket"]].to_pylist(), batch[names["key"]].to_pylist(),
                   batch[names["islatest"]].to_pylist() if "islatest" in names else [True] * batch.num_rows,
                   batch[names["isdeletemarker"]].to_pylist() if "isdeletemarker" in names
                   else [False] * batch.num_rows)
        decode = unquote_plus if head.format == "inventory-csv" else (lambda key: key)
        listed = [f"{bucket}/{decode(key)}" for bucket, key, latest, deleted in rows
                  if key and _truthy(latest, True) and not _truthy(deleted, False)]
        images = [path for path in listed if is_image(path) and not is_excluded(path, exclude_prefixes)]
        if skipped is not None and len(listed) != len(images):
            # one report per batch, named by its first row; acknowledged before the batch moves on
            ray.get(skipped.report.remote(listed[0], len(listed) - len(images)))
        return pa.table({col.PATH: pa.array([f"s3://{path}" for path in images], pa.string())})
    values = [str(value).strip() if value is not None else "" for value in batch[head.path_column].to_pylist()]
    if head.key_column:
        keys_out = batch[head.key_column].cast(pa.string()).to_pylist()
    paths, keys = [], []
    for index, value in enumerate(values):
        if not value:
            continue
        path = value.removeprefix("file://") if value.startswith("file://") else value
        if is_excluded(path.removeprefix("s3://"), exclude_prefixes):
            continue
        paths.append(path)
        keys.append(keys_out[index] if keys_out is not None else None)
    columns = {col.PATH: pa.array(paths, pa.string())}
    if head.key_column:
        columns[col.KEY] = pa.array(keys, pa.string())
    return pa.table(columns)


def _truthy(value: object, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value is True or str(value).lower() == "true"


MANIFEST_BATCH_ROWS = 65536  # rows a manifest-read task hands on at a time


def _manifest_chunks(path: str, head: ManifestHead, filesystem: pafs.FileSystem) -> Iterator[pa.Table]:
    """A manifest data file's rows, MANIFEST_BATCH_ROWS at a time, read with pyarrow (a .gz file is
    decompressed by its name)."""
    if head.format in ("inventory-parquet", "parquet"):
        with filesystem.open_input_file(path) as file:
            for batch in pq.ParquetFile(file).iter_batches(MANIFEST_BATCH_ROWS):
                yield pa.Table.from_batches([batch])
        return
    with filesystem.open_input_stream(path, compression="detect") as stream:
        if head.format == "text":
            lines = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
            while chunk := list(itertools.islice(lines, MANIFEST_BATCH_ROWS)):
                yield pa.table({"text": pa.array(chunk, pa.string())})
            return
        if head.format == "inventory-csv":
            options = {"read_options": pacsv.ReadOptions(column_names=head.inventory_columns,
                                                         block_size=MANIFEST_BATCH_ROWS * 128),
                       "convert_options": pacsv.ConvertOptions(
                           column_types={name: pa.string() for name in head.inventory_columns})}
        else:
            options = {"read_options": pacsv.ReadOptions(block_size=MANIFEST_BATCH_ROWS * 128),
                       "convert_options": pacsv.ConvertOptions(column_types={
                           name: pa.string() for name in filter(None, (head.path_column, head.key_column))})}
        for batch in pacsv.open_csv(stream, **options):
            yield pa.Table.from_batches([batch])


def _read_manifest_files(files: pa.Table, *, head: ManifestHead, filesystem: pafs.FileSystem,
                         exclude_prefixes: list[str], skipped: "ray.actor.ActorHandle | None") -> Iterator[pa.Table]:
    """A read task: the rows of its manifest data files, as a listing gives them."""
    for path in files["file"].to_pylist():
        for chunk in _manifest_chunks(path, head, filesystem):
            yield _normalize_manifest(chunk, head=head, exclude_prefixes=exclude_prefixes, skipped=skipped)


def manifest_dataset(config: JobConfig, source: Location, exclude_prefixes: list[str],
                     skipped: "ray.actor.ActorHandle | None" = None) -> ray.data.Dataset:
    """The objects a manifest lists: one read task per data file, streaming its rows with pyarrow.

    The tasks ask for LIST_TASK_CPUS, as listing tasks do: they only wait on the store. (Ray Data's
    readers ask for 1 CPU, and read_parquet lists its files in a 1-CPU task of its own, with no public
    setting to change it: on a CPU node whose cores the inference actor holds, neither would start and
    the job would wait forever.)"""
    head = manifest_head(config, source)
    files = ray.data.from_items([{"file": path} for path in head.files], override_num_blocks=len(head.files))
    return files.map_batches(partial(_read_manifest_files, head=head, filesystem=source.filesystem,
                                     exclude_prefixes=exclude_prefixes, skipped=skipped),
                             batch_size=1, batch_format="pyarrow", num_cpus=LIST_TASK_CPUS)
