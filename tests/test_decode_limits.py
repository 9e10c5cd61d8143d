"""Large legitimate photos decode; bombs and bad files become error rows with a kind to group by.

Every input here is a real file made by Pillow (a 108 MP JPEG, a 120 MP PNG bomb, a truncated JPEG …).
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from PIL import Image

from batchinfer.cli import build_parser, config_from_args
from batchinfer.config import DEFAULT_MAX_IMAGE_PIXELS
from batchinfer.preprocess import (ERROR_KINDS, EvalTransform, Preprocessor, TooLarge, decode_image, failure,
                                   jpeg_orientation)
from batchinfer.columns import prediction_schema
from batchinfer.commit import errors_by_kind
from tests.support import photo_dir

PHOTOS = photo_dir()
HUGE = (12_000, 9_000)  # 108 MP


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def coffee() -> Image.Image:
    return Image.open(PHOTOS / "coffee.png").convert("RGB")


@pytest.fixture(scope="module")
def huge_jpeg() -> bytes:
    """A 12000x9000 (108 MP) JPEG photo, as medium-format cameras and panoramas produce."""
    return encode(coffee().resize(HUGE, Image.Resampling.BILINEAR), "JPEG", quality=85)


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """12000x10000 (120 MP) in a 15 kB PNG: over Pillow's limit, so it must never be decoded."""
    return encode(Image.new("1", (12_000, 10_000)), "PNG")


def test_default_limit_is_pillows() -> None:
    """The default equals Pillow's own limit (read in a fresh interpreter: decoding sets Pillow's global)."""
    pillow = subprocess.run([sys.executable, "-c", "import PIL.Image; print(PIL.Image.MAX_IMAGE_PIXELS)"],
                            capture_output=True, text=True, check=True).stdout
    assert DEFAULT_MAX_IMAGE_PIXELS == int(pillow)


def test_108_megapixel_jpeg_is_decoded_at_reduced_size(huge_jpeg) -> None:
    """Over Pillow's limit at full size, but decoded at 1/8 scale: what is decoded is judged."""
    assert HUGE[0] * HUGE[1] > DEFAULT_MAX_IMAGE_PIXELS
    eighth = ((HUGE[0] + 7) // 8, (HUGE[1] + 7) // 8)
    assert decode_image(huge_jpeg, 256).size == eighth
    transform = EvalTransform()
    crop = Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(huge_jpeg).astype(np.int16)
    small = coffee().resize(eighth, Image.Resampling.BILINEAR)  # the same picture, never that large
    reference = np.asarray(transform.resize_and_crop()(small), dtype=np.int16)
    assert np.abs(crop - reference).mean() < 3


def test_jpeg_limit_counts_decoded_pixels(huge_jpeg) -> None:
    decoded = decode_image(huge_jpeg, 256).size
    with pytest.raises(TooLarge) as refused:
        decode_image(huge_jpeg, 256, max_pixels=decoded[0] * decoded[1] - 1)
    assert failure(refused.value).kind == "too_large" and "--max-image-pixels" in str(refused.value)
    assert decode_image(huge_jpeg, 256, max_pixels=decoded[0] * decoded[1]).size == decoded


def test_device_decoder_gets_only_jpegs_within_the_limit_at_full_size(huge_jpeg) -> None:
    """nvjpeg decodes at full size: a JPEG over the limit takes the CPU path, which decodes it reduced."""
    assert jpeg_orientation(huge_jpeg) is None
    assert jpeg_orientation(huge_jpeg, max_pixels=HUGE[0] * HUGE[1]) == 1


def test_png_bomb_is_refused_without_decoding(png_bomb) -> None:
    with pytest.raises(TooLarge) as refused:
        decode_image(png_bomb, 256)
    kind, message = failure(refused.value)
    assert kind == "too_large" and f"{12_000 * 10_000:,} pixels" in message
    assert f"--max-image-pixels {DEFAULT_MAX_IMAGE_PIXELS:,}" in message


def test_limit_applies_to_other_formats() -> None:
    """PNG is decoded at full size, so its full size is judged: refused under a lower limit."""
    png = encode(coffee(), "PNG")
    width, height = coffee().size
    with pytest.raises(TooLarge):
        decode_image(png, 256, max_pixels=width * height - 1)
    assert decode_image(png, 256, max_pixels=width * height).size == (width, height)


def bad_files(png_bomb: bytes) -> dict[str, tuple[bytes, str]]:
    """Real bad files and the kind each must get."""
    jpeg = encode(coffee(), "JPEG", quality=90)
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "decode"),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"this is a text file, not a JPEG\n" * 10, "not_an_image"),
        "random.png": (np.random.default_rng(3).bytes(5_000), "not_an_image"),
        "bomb.png": (png_bomb, "too_large"),
        "good.jpg": (jpeg, None),
    }


def test_batch_error_rows_have_kinds_and_no_object_reprs(tmp_path, png_bomb) -> None:
    """Through the decode stage as the job runs it: a kind for every error row, null when ok, and
    messages without `<_io.BytesIO object at 0x…>` (Pillow puts the stream's repr in its own)."""
    files = bad_files(png_bomb)
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "unreadable.jpg").mkdir()  # a path that exists but cannot be read as an object
    names = [*files, "unreadable.jpg", "missing.jpg"]
    out = Preprocessor(pafs.LocalFileSystem(), EvalTransform(), "")(
        {"path": np.array([str(tmp_path / name) for name in names], dtype=object)})
    kinds = dict(zip(names, out["error_kind"]))
    assert kinds == {**{name: kind for name, (_, kind) in files.items()}, "unreadable.jpg": "read",
                     "missing.jpg": "read"}
    messages = dict(zip(names, out["error"]))
    assert messages["good.jpg"] is None
    for name, message in messages.items():
        if message is not None:
            assert " object at 0x" not in message and "\n" not in message, message
    assert messages["text.jpg"].startswith("cannot identify image")
    assert messages["empty.jpg"] == "empty file (0 bytes)"
    assert "truncated" in messages["truncated.jpg"]
    assert messages["missing.jpg"].startswith("read failed: ObjectMissing")
    assert set(kinds.values()) - {None} <= set(ERROR_KINDS)


def test_pillow_message_would_carry_a_repr() -> None:
    """Why the scrub exists: Pillow's own UnidentifiedImageError names the BytesIO object."""
    with pytest.raises(Image.UnidentifiedImageError) as raised:
        Image.open(io.BytesIO(b"not an image"))
    assert " object at 0x" in str(raised.value)
    assert " object at 0x" not in failure(raised.value).message


def test_errors_by_kind_counts_rows() -> None:
    schema = prediction_schema()
    kinds = ["decode", None, "empty", "decode", None, "too_large"]
    table = pa.table({name: [None] * len(kinds) for name in schema.names if name != "path"}
                     | {"path": [f"p{i}" for i in range(len(kinds))], "error_kind": kinds})
    assert errors_by_kind(table) == {kind: kinds.count(kind) for kind in set(kinds) - {None}}


@pytest.mark.parametrize(("value", "expected"), [([], DEFAULT_MAX_IMAGE_PIXELS),
                                                 (["--max-image-pixels", "200000000"], 200_000_000)])
def test_max_image_pixels_flag(value, expected) -> None:
    args = build_parser().parse_args(["run", "--input", "s3://b/in/", "--output", "s3://b/out/", *value])
    assert config_from_args(args).max_image_pixels == expected
