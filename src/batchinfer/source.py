"""Which objects are inputs: the job's entry points to its two datasources. `--input` naming a manifest
(manifests.py: a Parquet, CSV or text list of URIs, or an S3 Inventory report) is read as a table;
any other input is a prefix listed by Ray tasks as the job runs (listing.py). Names only, no bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs
import ray

from batchinfer.config import JobConfig, UserError
from batchinfer.listing import SAMPLE_PAGES, first_images, listing_dataset
from batchinfer.manifests import is_manifest, manifest_dataset, manifest_head
from batchinfer.storage import Location, s3_filesystem


@dataclass(frozen=True)
class CheckedInput:
    """What `check_input` learned: where the images are read from (the input, or the store a manifest
    names), and the images on the input's first SAMPLE_PAGES listing pages: how many, and their mean
    size (both None for a manifest)."""

    images: Location
    image_bytes: int | None = None
    sampled_images: int | None = None


def check_input(config: JobConfig, source: Location, exclude_prefixes: list[str]) -> CheckedInput:
    """Before any heavy work: the one-line UserError for an input that is empty, holds no images, or
    (a manifest) cannot be read as one. Reads a page, or a manifest's schema and first rows."""
    if is_manifest(config.input_uri):
        scheme = manifest_head(config, source).scheme
        return CheckedInput(Location(s3_filesystem(config.s3) if scheme == "s3" else pafs.LocalFileSystem(), "",
                                     scheme))
    if config.path_column or config.key_column:
        raise UserError("--path-column and --key-column name columns of a manifest: give --input a .parquet or "
                        ".csv file of object URIs, or leave them out")
    first = first_images(source, config.s3, config.storage_timeout_s, exclude_prefixes, SAMPLE_PAGES)
    return CheckedInput(source, round(sum(first.values()) / len(first)), len(first))


def input_dataset(config: JobConfig, source: Location, exclude_prefixes: list[str],
                  skipped: "ray.actor.ActorHandle | None" = None) -> ray.data.Dataset:
    """The job's inputs as a lazy dataset: column `path` (the input URI: `s3://bucket/key`, or a local
    path) and, for a manifest with --key-column, `key`; --limit applied. Non-images skipped by the
    listing are reported to `skipped` (a listing.SkippedCounter), when given. Needs Ray."""
    if is_manifest(config.input_uri):
        dataset = manifest_dataset(config, source, exclude_prefixes, skipped)
    else:
        dataset = listing_dataset(config, source, exclude_prefixes, skipped)
    return dataset.limit(config.limit) if config.limit else dataset
