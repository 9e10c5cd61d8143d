"""The listing datasource: which objects under an input prefix (S3 or a local directory) are inputs, as
a lazy Ray Data dataset of image URIs listed by Ray tasks as the job runs.

The driver never lists the input, and never holds its paths. It does two cheap things:

* `first_images` (source.check_input, before any heavy work) reads the first pages of the input and
  raises the one-line UserError for an input that holds nothing, or no images; the first pages'
  image count and object sizes tell the pipeline how many images a decode task takes.
* `plan_units` splits the key space into disjoint *units*, spending at most PLAN_REQUESTS small
  listing requests: a breadth-first "skip scan" over the input directory's entries (with
  `Delimiter="/"`), one character deeper at a time, until there are PLAN_UNITS groups of entries or
  every group is small. A unit is either the entries of a directory whose keys fall in a range
  `(after, upto]` (a flat prefix of a million objects becomes many ranges, each listed from
  `StartAfter=after`), or the subtree of one common prefix.

`listing_dataset` turns the units into a Ray Data stage: one listing task per unit (`map_batches`
over the unit rows) pages through its range with boto3 and yields the image paths it finds, so the
first images are decoded while other units are still being listed, and `--limit N` (Ray Data's
`limit`, which stops the upstream tasks, plus a per-task stop at N images) ends the listing early.
Ray Data gathers a task's output into one block (up to its 128 MiB target) before passing it on, so
the unit is the grain of streaming: that is why the planner aims for many units.

Exactly once: units are disjoint by construction. Ranges are *directory-aligned*: a common prefix is
never cut, only the entries of one directory are split, and never between a directory `n/` and a
sibling `n…` that sorts differently by name than by key. That matters because S3 lists keys in
UTF-8 byte order, while SeaweedFS lists a directory tree (`in/a/x.jpg` before `in/a-b.jpg`); a range
of entries of one directory is the same set under both orders. Inside a common prefix, the listing
is a plain recursive `Prefix=` listing, exact on every server. Keys pyarrow cannot name
(`in//a.jpg`) are listed verbatim by boto3 and read with boto3 by the decode stage.

Non-images are counted per unit in a small actor (`SkippedCounter`), never collected. A local
directory is split the same way by `os.scandir`: the files at its top, and each subdirectory.
Which objects are images (`is_image`) and which are the job's own (`is_excluded`) is decided here for
manifests too (manifests.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import botocore.exceptions
import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from batchinfer import columns as col
from batchinfer.config import JobConfig, S3Options, UserError
from batchinfer.storage import Location, check_bucket, explain, retry_storage, s3_client
from batchinfer.storage_errors import from_boto

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PAGE_KEYS = 1000          # keys per listing request (the S3 maximum)
PLAN_UNITS = 64           # listing tasks the planner aims for
PROBE_KEYS = 100          # a group's first probe: more entries than this and it is worth splitting; later
                          # probes (jumps to the next prefix) ask for one key, so they cost little
PLAN_REQUESTS = 200       # the most listing requests the driver spends on planning
PLAN_DEPTH = 32           # the deepest character position a directory's entries are split at
LIST_TASK_CPUS = 0.1      # a listing task waits on the store; it must not crowd out decode tasks
LIST_TASKS_AT_ONCE = 4    # listing tasks running at once (each a worker process): ~10k keys/s each on S3,
                          # far ahead of inference; unbounded, 0.1-CPU tasks filled a node with processes
AFTER_ALL = "\U0010ffff"  # sorts after every character: `p + AFTER_ALL` is after every key starting with p
SAMPLE_PAGES = 4          # listing pages check_input reads for the images' number and sizes (pipeline.decode_batch)


def is_image(path: str) -> bool:
    """True for a path whose name ends in one of IMAGE_EXTENSIONS (any case)."""
    name = path.rsplit("/", 1)[-1]
    return "." in name and name[name.rindex("."):].lower() in IMAGE_EXTENSIONS


def is_excluded(path: str, exclude_prefixes: list[str]) -> bool:
    """True for a path at or under one of `exclude_prefixes` (our own output and its `.batchinfer/`)."""
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in exclude_prefixes)


def in_range(key: str, after: str | None, upto: str | None) -> bool:
    """`after < key <= upto`, either end open when None (Python compares code points, which is the UTF-8
    byte order S3 sorts keys by)."""
    return (after is None or key > after) and (upto is None or key <= upto)


@dataclass(frozen=True)
class Unit:
    """One listing task's share of the input.

    kind `range`: the entries of `directory` (a key prefix ending in `/`, or "" for a bucket root) whose
    keys are in `(after, upto]`; each common prefix among them is listed recursively. kind `tree`:
    every key under `directory`, recursively. Local inputs: `files` (the files directly in a
    directory) and `tree`."""

    kind: str
    directory: str
    after: str | None = None
    upto: str | None = None


def ranges_from_groups(groups: list[str]) -> list[tuple[str | None, str | None]]:
    """Key ranges `(after, upto]` that cover a directory's whole key space, one per group (sorted
    entry-name prefixes): group `g` ends at `g + AFTER_ALL`, after every key it prefixes, unless the next
    group starts with `g` (then `g` stands for the one key equal to it, and ends there). The first range
    starts at the beginning, the last runs to the end. Boundaries only rise, so the ranges are disjoint
    and cover every key whatever the groups; good groups only balance them."""
    ordered = sorted(groups)
    ends = [group if following.startswith(group) else group + AFTER_ALL
            for group, following in zip(ordered, ordered[1:])]
    bounds: list[str | None] = [None, *ends, None]
    return list(zip(bounds[:-1], bounds[1:]))


def splittable(group: str, children: list[str]) -> bool:
    """May `group` be replaced by its `children` (one character longer)? Not when a common prefix is
    named exactly `group` (child `group/`): servers that list by name (SeaweedFS) put `group/` before
    `group.jpg`, byte order puts it after, so no boundary may fall among them."""
    return group + "/" not in children


@dataclass
class _Group:
    prefix: str          # entry-name prefix, relative to the directory
    open: bool = True    # worth splitting further (its first page was full)
    subdirectory: bool = False  # exactly one common prefix: planned as a directory of its own


class Page(NamedTuple):
    """One listing request's answer."""

    keys: list[str]
    prefixes: list[str]    # common prefixes (with a delimiter)
    token: str | None      # the next page's continuation token; None: this was the last page
    sizes: list[int]       # each key's object size in bytes


class S3Lister:
    """Pages of one bucket's keys, with boto3 (which sends any key verbatim), retried through outages."""

    def __init__(self, options: S3Options, bucket: str, storage_timeout_s: float) -> None:
        self.options = options
        self.bucket = bucket
        self.storage_timeout_s = storage_timeout_s
        self.requests = 0

    def page(self, prefix: str, delimiter: str | None = None, start_after: str | None = None,
             token: str | None = None, max_keys: int = PAGE_KEYS) -> Page:
        args = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        elif start_after:
            args["StartAfter"] = start_after

        def request() -> dict:
            try:
                return s3_client(self.options).list_objects_v2(**args)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise from_boto(exc, f"s3://{self.bucket}/{prefix}") from None

        self.requests += 1
        answer = retry_storage(request, f"list s3://{self.bucket}/{prefix}", self.storage_timeout_s)
        contents = answer.get("Contents", [])
        return Page([item["Key"] for item in contents], [item["Prefix"] for item in answer.get("CommonPrefixes", [])],
                    answer.get("NextContinuationToken") if answer.get("IsTruncated") else None,
                    [item.get("Size", 0) for item in contents])


def _bucket_and_directory(location: Location) -> tuple[str, str]:
    bucket, _, prefix = location.path.partition("/")
    return bucket, f"{prefix}/" if prefix else ""


def _children(lister: S3Lister, directory: str, group: str, budget: int
              ) -> tuple[list[str], bool, set[str]] | None:
    """The distinct entry-name prefixes one character longer than `group` among the entries of
    `directory` (skip scan: after each page, jump past the last prefix seen), whether the first page
    (PROBE_KEYS entries) was full, and which of them hold a common prefix. None when the budget ran out first."""
    children: list[str] = []
    holding_prefixes: set[str] = set()
    after: str | None = None
    first_page_full = False
    while True:
        if lister.requests >= budget:
            return None
        keys, prefixes, token, _ = lister.page(directory + group, "/", start_after=after,
                                               max_keys=PROBE_KEYS if after is None else 1)
        first_page_full = first_page_full or (after is None and token is not None)
        for key in sorted(keys + prefixes):
            child = key[len(directory):len(directory) + len(group) + 1]
            if child not in children:
                children.append(child)
        holding_prefixes.update(prefix[len(directory):len(directory) + len(group) + 1] for prefix in prefixes)
        if token is None or not children:
            return children, first_page_full, holding_prefixes
        after = directory + max(children) + AFTER_ALL


def _plan_directory(lister: S3Lister, directory: str, units_wanted: int, budget: int) -> list[Unit]:
    """Split one directory's entries into about `units_wanted` ranges, breadth first, one character
    deeper at a time. A group is split further while its first page is full or it holds common
    prefixes; a group that is exactly one common prefix is planned as a directory of its own."""
    groups = [_Group("")]
    while len(groups) < units_wanted:
        candidates = [group for group in groups if group.open and len(group.prefix) < PLAN_DEPTH]
        if not candidates:
            break
        group = min(candidates, key=lambda each: len(each.prefix))
        group.open = False
        found = _children(lister, directory, group.prefix, budget)
        if found is None:
            break
        children, full, holding_prefixes = found
        if children == [group.prefix + "/"]:
            group.subdirectory = True
        elif not (full or holding_prefixes):
            continue  # small: one probe holds it
        elif len(children) == 1:
            if children[0] != group.prefix:  # one longer prefix (`img_…`): look one character deeper
                group.prefix, group.open = children[0], True
        elif splittable(group.prefix, children):
            index = groups.index(group)
            groups[index:index + 1] = [_Group(child, open=child != group.prefix and (full or child in holding_prefixes))
                                       for child in sorted(children)]
    units: list[Unit] = []
    for index, ((after, upto), group) in enumerate(zip(ranges_from_groups([g.prefix for g in groups]), groups)):
        if group.subdirectory and lister.requests < budget:
            wanted = max(1, units_wanted - len(units) - (len(groups) - index))
            units += _plan_directory(lister, directory + group.prefix + "/", wanted, budget)
        else:
            units.append(Unit("range", directory, None if after is None else directory + after,
                              None if upto is None else directory + upto))
    return units


def plan_units(location: Location, options: S3Options, storage_timeout_s: float,
               units_wanted: int = PLAN_UNITS, budget: int = PLAN_REQUESTS) -> list[Unit]:
    """The disjoint units that together cover the input (see the module docstring)."""
    if location.scheme != "s3":
        root = location.path
        try:
            subdirectories = sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
        except FileNotFoundError:
            return []
        return [Unit("files", root), *(Unit("tree", path) for path in subdirectories)]
    bucket, directory = _bucket_and_directory(location)
    lister = S3Lister(options, bucket, storage_timeout_s)
    return _plan_directory(lister, directory, units_wanted, budget)


def _walk_files(directory: str, recursive: bool) -> Iterator[list[str]]:
    """Local files under `directory` (sorted per directory), a page at a time."""
    pending = [directory]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        files = [entry.path for entry in entries if entry.is_file()]
        for start in range(0, len(files), PAGE_KEYS):
            yield files[start:start + PAGE_KEYS]
        if recursive:
            pending += [entry.path for entry in reversed(entries) if entry.is_dir(follow_symlinks=False)]


def unit_keys(unit: Unit, lister: S3Lister | None) -> Iterator[list[str]]:
    """A unit's object paths (S3: keys; local: file paths), a page at a time."""
    if lister is None:
        yield from _walk_files(unit.directory, recursive=unit.kind == "tree")
        return
    if unit.kind == "tree":
        yield from (page.keys for page in _tree_pages(lister, unit.directory))
        return
    token, after = None, unit.after
    while True:
        keys, prefixes, token, _ = lister.page(unit.directory, "/", start_after=after, token=token)
        yield [key for key in keys if in_range(key, unit.after, unit.upto)]
        for prefix in prefixes:
            if in_range(prefix, unit.after, unit.upto):
                yield from (page.keys for page in _tree_pages(lister, prefix))
        past_the_end = unit.upto is not None and any(key > unit.upto for key in keys + prefixes)
        if token is None or past_the_end:
            return


def _tree_pages(lister: S3Lister, prefix: str) -> Iterator[Page]:
    """Every page of the keys under `prefix` (no delimiter: the whole tree), following the continuation."""
    token = None
    while True:
        page = lister.page(prefix, token=token)
        yield page
        if page.token is None:
            return
        token = page.token


@ray.remote(num_cpus=0)
class SkippedCounter:
    """Non-images skipped, per listing unit (set, not added: a retried task reports its unit again)."""

    def __init__(self) -> None:
        self.by_unit: dict[int | str, int] = {}

    def report(self, unit: int | str, skipped: int) -> None:
        self.by_unit[unit] = skipped

    def total(self) -> int:
        return sum(self.by_unit.values())


def skipped_counter() -> "ray.actor.ActorHandle":
    """A SkippedCounter on the driver's own node: a worker node lost mid-run (a pod gone) must not take
    the count, and the job, with it."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return SkippedCounter.options(scheduling_strategy=here).remote()


def count_skipped(skipped: "ray.actor.ActorHandle") -> int:
    """The non-images a SkippedCounter was told of, over all units."""
    return ray.get(skipped.total.remote())


def _list_units(batch: pa.Table, *, scheme: str, bucket: str, options: S3Options, storage_timeout_s: float,
                exclude_prefixes: list[str], limit: int | None, skipped: "ray.actor.ActorHandle | None"
                ) -> Iterator[pa.Table]:
    """The listing stage: for each unit row, its image URIs, a page at a time (stops at `limit`)."""
    lister = S3Lister(options, bucket, storage_timeout_s) if scheme == "s3" else None
    for row in batch.to_pylist():
        unit = Unit(row["kind"], row["directory"], row["after"], row["upto"])
        found = others = 0
        for keys in unit_keys(unit, lister):
            paths = [f"{bucket}/{key}" for key in keys] if lister else keys
            paths = [path for path in paths if not is_excluded(path, exclude_prefixes)]
            images: list[str] = []
            for path in paths:  # in listing order, up to the limit: non-images passed on the way count
                if limit is not None and found + len(images) >= limit:
                    break
                if is_image(path):
                    images.append(path)
                else:
                    others += 1
            found += len(images)
            if images:
                yield pa.table({col.PATH: [f"s3://{path}" if lister else path for path in images]})
            if limit is not None and found >= limit:
                break
        if skipped is not None:
            ray.get(skipped.report.remote(row["unit"], others))


def first_images(source: Location, options: S3Options, storage_timeout_s: float,
                 exclude_prefixes: list[str], pages: int = 1) -> dict[str, int]:
    """The images of the input's first `pages` pages, or of as many more as it takes to find one, path ->
    size in bytes, in listing order; UserError when the input holds nothing, or no images."""
    check_bucket(source, options)
    files, images = 0, {}
    for read, entries in enumerate(_first_entries(source, options, storage_timeout_s), 1):
        kept = {path: size for path, size in entries if not is_excluded(path, exclude_prefixes)}
        files += len(kept)
        images |= {path: size for path, size in kept.items() if is_image(path)}
        if images and read >= pages:
            return images
    if images:
        return images
    what = "nothing" if not files else f"{files} objects but no images"
    raise UserError(f"found {what} under {source.uri()}: check the input prefix (images must end in "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))})")


def _first_entries(source: Location, options: S3Options, storage_timeout_s: float
                   ) -> Iterator[list[tuple[str, int]]]:
    """The input's (path, size) a page at a time, until the caller stops asking (usually after the first)."""
    if source.scheme != "s3":
        if not os.path.isdir(source.path):
            return
        for paths in _walk_files(source.path, recursive=True):
            yield [(path, os.path.getsize(path)) for path in paths]
        return
    bucket, directory = _bucket_and_directory(source)
    lister = S3Lister(options, bucket, storage_timeout_s)
    try:
        for page in _tree_pages(lister, directory):
            yield [(f"{bucket}/{key}", size) for key, size in zip(page.keys, page.sizes)]
    except OSError as exc:
        raise explain(exc, source.uri(), options) from None


def listing_dataset(config: JobConfig, source: Location, exclude_prefixes: list[str],
                    skipped: "ray.actor.ActorHandle | None" = None) -> ray.data.Dataset:
    """The images under the input prefix as a lazy dataset (column `path`), one listing task per unit of
    `plan_units`, LIST_TASKS_AT_ONCE at a time. Non-images are reported to `skipped`, when given."""
    try:
        units = plan_units(source, config.s3, config.storage_timeout_s)
    except OSError as exc:
        raise explain(exc, source.uri(), config.s3) from None
    bucket = source.path.partition("/")[0] if source.scheme == "s3" else ""
    rows = [{"unit": index, "kind": unit.kind, "directory": unit.directory, "after": unit.after,
             "upto": unit.upto} for index, unit in enumerate(units)]
    lister = partial(_list_units, scheme=source.scheme, bucket=bucket, options=config.s3,
                     storage_timeout_s=config.storage_timeout_s, exclude_prefixes=exclude_prefixes,
                     limit=config.limit, skipped=skipped)
    return ray.data.from_items(rows, override_num_blocks=max(1, len(rows))).map_batches(
        lister, batch_size=1, batch_format="pyarrow", num_cpus=LIST_TASK_CPUS,
        compute=ray.data.TaskPoolStrategy(size=min(len(rows), LIST_TASKS_AT_ONCE)))
