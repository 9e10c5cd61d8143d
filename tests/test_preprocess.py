"""Preprocessing equals the models' own reference transforms on real photos; odd images decode right."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torchvision.models import get_model_weights

from batchinfer.preprocess import READ_AT_ONCE, BadImage, EvalTransform, Preprocessor, decode_image, failure
from tests.support import photo_dir

PHOTOS = photo_dir()
REAL_PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"]


def normalized(crop: np.ndarray, transform: EvalTransform) -> torch.Tensor:
    """What the inference actor does with a uint8 crop (see Predictor.to_model_input)."""
    tensor = torch.from_numpy(crop.copy()).permute(2, 0, 1).float()
    mean = torch.tensor(transform.mean).view(3, 1, 1) * 255
    std = torch.tensor(transform.std).view(3, 1, 1) * 255
    return (tensor - mean) / std


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("photo", REAL_PHOTOS)
def test_matches_torchvision_reference(photo: str) -> None:
    reference = get_model_weights("resnet50").DEFAULT.transforms()
    transform = EvalTransform.from_torchvision(reference)
    ours = normalized(Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(
        (PHOTOS / photo).read_bytes()), transform)
    expected = reference(Image.open(PHOTOS / photo).convert("RGB"))
    assert ours.shape == expected.shape == (3, 224, 224)
    assert torch.allclose(ours, expected, atol=1e-4)


def test_large_jpeg_photo_stays_close_to_reference() -> None:
    """retina.jpg (1411 px) is decoded with DCT scaling: not bit-equal, but well under one grey level."""
    reference = get_model_weights("resnet50").DEFAULT.transforms()
    transform = EvalTransform.from_torchvision(reference)
    ours = normalized(Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(
        (PHOTOS / "retina.jpg").read_bytes()), transform)
    expected = reference(Image.open(PHOTOS / "retina.jpg").convert("RGB"))
    assert (ours - expected).abs().mean() < 0.02


@pytest.mark.parametrize("photo", REAL_PHOTOS[:3])
def test_matches_timm_reference(photo: str) -> None:
    config = resolve_data_config({}, model=timm.create_model("efficientnet_lite0"))
    transform = EvalTransform.from_timm(config)
    ours = normalized(Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(
        (PHOTOS / photo).read_bytes()), transform)
    expected = create_transform(**config)(Image.open(PHOTOS / photo).convert("RGB"))
    assert torch.allclose(ours, expected, atol=1e-4)


def coffee() -> Image.Image:
    return Image.open(PHOTOS / "coffee.png").convert("RGB")


def test_exif_rotation_is_applied() -> None:
    upright = np.asarray(decode_image(encode(coffee(), "PNG"), 256), dtype=np.int16)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90° clockwise
    stored = coffee().transpose(Image.Transpose.ROTATE_90)
    rotated = np.asarray(decode_image(encode(stored, "PNG", exif=exif.tobytes()), 256), dtype=np.int16)
    assert rotated.shape == upright.shape
    assert np.abs(rotated - upright).mean() < 1


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_modes_decode_to_rgb(mode: str) -> None:
    image = coffee().convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(coffee().convert("L"), dtype=np.uint16) * 257)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(image, fmt), 256)
    assert decoded.mode == "RGB" and decoded.size == coffee().size
    gray = np.asarray(decoded.convert("L"), dtype=np.float32)
    assert abs(gray.mean() - np.asarray(coffee().convert("L"), dtype=np.float32).mean()) < 12


def test_sixteen_bit_keeps_brightness() -> None:
    gray = np.asarray(coffee().convert("L"), dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(gray * 257), "PNG"), 256)
    assert np.abs(np.asarray(decoded.convert("L"), dtype=np.int16) - gray).max() <= 1


def test_transparent_areas_become_white() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert np.asarray(decode_image(encode(image, "PNG"), 32)).min() == 255


def test_large_jpeg_is_decoded_at_reduced_size_with_same_content() -> None:
    big = coffee().resize((2400, 1600))
    transform = EvalTransform()
    pre = Preprocessor(pafs.LocalFileSystem(), transform, "")
    crop = pre.preprocess(encode(big, "JPEG", quality=95))
    reference = np.asarray(transform.resize_and_crop()(big), dtype=np.int16)
    assert crop.shape == (224, 224, 3)
    assert np.abs(crop.astype(np.int16) - reference).mean() < 3


@pytest.mark.parametrize(("payload", "kind"), [(b"", "empty"), (b"not an image at all", "not_an_image"),
                                               (encode(coffee(), "JPEG")[:300], "decode")],
                         ids=["empty", "text", "truncated"])
def test_undecodable_bytes_raise(payload: bytes, kind: str) -> None:
    with pytest.raises((BadImage, OSError)) as raised:
        decode_image(payload, 256)
    assert failure(raised.value).kind == kind


def test_batch_turns_failures_into_error_rows(tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(encode(coffee(), "PNG"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    pre = Preprocessor(pafs.LocalFileSystem(), EvalTransform(), "", label_pattern=r"/([^/]+)\.\w+$")
    paths = [str(tmp_path / "good.png"), str(tmp_path / "bad.jpg"), str(tmp_path / "missing.png")]
    out = pre({"path": np.array(paths, dtype=object)})
    assert out["image"].shape == (3, 224, 224, 3) and out["image"].dtype == np.uint8
    assert out["error"][0] is None and out["error_kind"][0] is None
    assert out["error"][1] and out["error_kind"][1] == "not_an_image"  # no JPEG signature: no format
    assert out["error"][2].startswith("read failed: ObjectMissing") and out["error_kind"][2] == "read"
    assert list(out["true_label"]) == ["good", "bad", "missing"]


def test_a_batch_larger_than_one_read_keeps_every_row_in_place(tmp_path: Path) -> None:
    """A decode task of tiny objects takes up to pipeline.DECODE_BATCH_MAX images, read READ_AT_ONCE at a
    time: every row keeps its own result, whichever read it came in."""
    size = 2 * READ_AT_ONCE + 3
    bad = {READ_AT_ONCE - 1, READ_AT_ONCE, size - 1}  # at both edges of a read, and in the last one
    paths = []
    for index in range(size):
        path = tmp_path / f"{index}.png"
        color = (index % 256, 255 - index % 256, 0)
        path.write_bytes(b"not an image" if index in bad else encode(Image.new("RGB", (32, 24), color), "PNG"))
        paths.append(str(path))
    out = Preprocessor(pafs.LocalFileSystem(), EvalTransform(), "")({"path": np.array(paths, dtype=object)})
    assert list(out["path"]) == paths
    assert [index for index, kind in enumerate(out["error_kind"]) if kind] == sorted(bad)
    for index in set(range(size)) - bad:
        assert tuple(out["image"][index][112, 112]) == (index % 256, 255 - index % 256, 0)
