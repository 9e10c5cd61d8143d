"""Which objects are inputs: a recursive listing filtered by image extension (names only, no bytes)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from batchinfer.config import S3Options, UserError
from batchinfer.storage import Location, check_bucket, explain

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Listing:
    """Input image paths (filesystem paths, sorted) and how many other objects were skipped."""

    paths: list[str]
    skipped: int


def is_image(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return "." in name and name[name.rindex("."):].lower() in IMAGE_EXTENSIONS


def list_images(location: Location, options: S3Options, exclude_prefix: str | None = None,
                limit: int | None = None) -> Listing:
    """List every image under the location, recursively. `exclude_prefix` hides our own output."""
    check_bucket(location, options)
    selector = pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    try:
        infos = location.filesystem.get_file_info(selector)
    except (OSError, ValueError) as exc:
        raise explain(exc, location.uri(), options) from None
    files = [info.path for info in infos if info.type == pafs.FileType.File
             and not (exclude_prefix and info.path.startswith(exclude_prefix + "/"))]
    images = sorted(path for path in files if is_image(path))
    if not images:
        what = "nothing" if not files else f"{len(files)} objects but no images"
        raise UserError(f"found {what} under {location.uri()}: check the input prefix (images must end in "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return Listing(paths=images[:limit] if limit else images, skipped=len(files) - len(images))
