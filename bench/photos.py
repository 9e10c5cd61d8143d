"""Photo-sized JPEGs in a local SeaweedFS bucket: generated once per (count, size), reused after."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # only for hints: bench.gpu uses the generator on machines without boto3
    from devkit.seaweed import SeaweedServer

BUCKET = "bench"
SOURCE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                 "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "grass.png", "gravel.png")


def source_photos() -> list[Image.Image]:
    """Real photos shipped with scikit-image, as RGB."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    photos = []
    for name in SOURCE_PHOTOS:
        image = Image.open(folder / name)
        background = Image.new("RGB", image.size, (255, 255, 255))
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background.paste(image, mask=image.getchannel("A"))
            image = background
        photos.append(image.convert("RGB"))
    return photos


def make_photo(photos: list[Image.Image], index: int, size: tuple[int, int], quality: int) -> bytes:
    """One JPEG: a random crop of a real photo, resized to `size`, with light sensor-like noise (which
    brings file sizes to those of camera photos: ~100 KB at 500x375)."""
    rng = np.random.default_rng(index)
    photo = photos[index % len(photos)]
    width, height = photo.size
    scale = rng.uniform(0.5, 1.0)
    crop_w, crop_h = int(width * scale), int(height * scale)
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 8, (size[1], size[0], 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def dataset_prefix(count: int, size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}/n{count}/"


def ensure_photos(server: SeaweedServer, count: int, size: tuple[int, int], quality: int = 94) -> dict:
    """Upload `count` JPEGs under s3://bench/<W>x<H>/n<count>/ unless they are there already.
    Returns {"uri", "prefix", "count", "mean_bytes", "generated"}."""
    client = server.client()
    if BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    prefix = dataset_prefix(count, size)
    sizes = [obj["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
             for obj in page.get("Contents", [])]
    generated = len(sizes) != count
    if generated:
        photos = source_photos()

        def upload(index: int) -> int:
            data = make_photo(photos, index, size, quality)
            client.put_object(Bucket=BUCKET, Key=f"{prefix}img-{index:06d}.jpg", Body=data)
            return len(data)

        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(upload, range(count)))
    return {"uri": f"s3://{BUCKET}/{prefix}", "prefix": prefix, "count": count,
            "mean_bytes": int(sum(sizes) / len(sizes)), "generated": generated}


def read_photos(server: SeaweedServer, prefix: str, limit: int) -> list[bytes]:
    """The first `limit` JPEGs of a dataset, as bytes (for the decode-only measurement)."""
    client = server.client()
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=limit)["Contents"]]
    return [client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys]
