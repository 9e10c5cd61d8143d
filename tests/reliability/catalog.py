"""Test inputs: the catalog of awkward files a real bucket holds, and many small distinct photos."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.support import photo_dir

PHOTOS = photo_dir()


@dataclass(frozen=True)
class Case:
    """One catalog object: its bytes and whether the job should classify it (else an error row)."""

    data: bytes
    classified: bool


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(name: str) -> Image.Image:
    return Image.open(PHOTOS / name)


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def bad_input_catalog() -> dict[str, Case]:
    """Every awkward input the issue lists, keyed by object name (some with spaces and non-ASCII)."""
    coffee = _photo("coffee.png").convert("RGB")
    chelsea = _photo("chelsea.png").convert("RGB")
    good_jpeg = _encode(coffee, "JPEG", quality=90)
    alpha = chelsea.convert("RGBA")
    alpha.putalpha(Image.linear_gradient("L").resize(chelsea.size))
    animated = [coffee.resize((160, 120)).convert("P"), chelsea.resize((160, 120)).convert("P")]
    sixteen_bit = Image.fromarray(np.asarray(coffee.convert("L"), dtype=np.uint16) * 257)  # I;16
    large = coffee.resize((6000, 4000), Image.Resampling.BILINEAR)  # 24 MP: under the bomb limit
    bomb = Image.new("1", (12_000, 10_000))  # 120 MP > Image.MAX_IMAGE_PIXELS (~89 MP)
    return {
        "zero-bytes.jpg": Case(b"", False),
        "truncated.jpg": Case(good_jpeg[: len(good_jpeg) // 3], False),
        "random-bytes.jpg": Case(np.random.default_rng(7).bytes(20_000), False),
        "text-file.png": Case(b"this is a text file, not a PNG\n" * 20, False),
        "alpha.png": Case(_encode(alpha, "PNG"), True),
        "palette.gif": Case(_encode(coffee.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"), True),
        "animated.gif": Case(_encode(animated[0], "GIF", save_all=True, append_images=animated[1:],
                                     duration=100, loop=0), True),
        "real-animated.gif": Case((PHOTOS / "no_time_for_that_tiny.gif").read_bytes(), True),
        "sixteen-bit.png": Case(_encode(sixteen_bit, "PNG"), True),
        "grayscale.jpg": Case(_encode(coffee.convert("L"), "JPEG"), True),
        "cmyk.jpg": Case(_encode(coffee.convert("CMYK"), "JPEG"), True),
        "exif-rotated.jpg": Case(_encode(coffee.rotate(-90, expand=True), "JPEG",
                                         exif=_exif_orientation(8)), True),
        "photo.webp": Case(_encode(coffee, "WEBP"), True),
        "multipage.tif": Case(_encode(coffee, "TIFF", save_all=True, append_images=[chelsea],
                                      compression="tiff_deflate"), True),
        "bomb.png": Case(_encode(bomb, "PNG", optimize=False), False),
        "one-pixel.png": Case(_encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), True),
        "large-valid.jpg": Case(_encode(large, "JPEG", quality=85), True),
        "with spaces/my photo (1).JPG": Case(good_jpeg, True),
        "non-ascii/café ☕ 東京.jpeg": Case(good_jpeg, True),
    }


# Objects under the input prefix that are not images: skipped, and counted in the summary.
NON_IMAGES = {"notes.txt": b"not an image\n", "labels.csv": b"a,b\n1,2\n", "README": b"hello\n"}


def photo_crops(count: int, size: int, seed: int = 0) -> list[bytes]:
    """`count` distinct small JPEGs: random crops of scikit-image's real photos, scaled to `size`."""
    names = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
    photos = [_photo(name).convert("RGB") for name in names]
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(96, min(photo.size)))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size))
        crops.append(_encode(crop, "JPEG", quality=85))
    return crops
