"""Decode (EXIF, odd modes, decompression bombs) and the model's own eval transform, in batches.

The decode stage hands the model fixed-shape uint8 HWC crops; normalization to float happens in the
inference actor, so only a quarter of the bytes crosses between stages. An input that cannot be
classified becomes an error row: a message and an `error_kind` (ERROR_KINDS) to group by.
"""

from __future__ import annotations

import copy
import io
import re
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
from torchvision.transforms import InterpolationMode, v2

from batchinfer import columns as col
from batchinfer.config import DEFAULT_MAX_IMAGE_PIXELS, S3Options
from batchinfer.storage import STORAGE_TIMEOUT_S, read_many

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
JPEG_MAGIC = b"\xff\xd8\xff"
EXIF_ORIENTATION_TAG = 0x0112
READ_AT_ONCE = 64  # objects a decode task holds read at once, however many its batch has
_DEVICE_DECODABLE_MODES = ("RGB", "L")  # CMYK/YCCK JPEGs stay on the CPU path, which converts them right
# What an error row's `error_kind` says: the object could not be read, has no bytes, is no image format
# Pillow knows, would decode to more than --max-image-pixels, or is an image that fails to decode.
ERROR_KINDS = ("read", "empty", "not_an_image", "too_large", "decode")
_OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-f]+>")


class BadImage(ValueError):
    """An input that is not a classifiable image; `kind` is its error_kind."""

    kind = "decode"


class EmptyFile(BadImage):
    kind = "empty"


class NotAnImage(BadImage):
    kind = "not_an_image"


class TooLarge(BadImage):
    kind = "too_large"

    def __init__(self, pixels: str, limit: int) -> None:
        super().__init__(f"{pixels} to decode, over --max-image-pixels {limit:,} (decompression-bomb "
                         "guard): raise it to decode trusted large images")


class Failure(NamedTuple):
    """An error row's reason: `kind` (one of ERROR_KINDS) and a one-line `message`."""

    kind: str
    message: str


def failure(exc: BaseException) -> Failure:
    """The error row for a decode exception. Our own reasons read as they are; others keep their type
    name (`OSError: image file is truncated …`). Object reprs (`<_io.BytesIO object at 0x…>`) are cut."""
    if isinstance(exc, BadImage):
        return Failure(exc.kind, str(exc))
    return Failure("decode", _OBJECT_REPR.sub("", f"{type(exc).__name__}: {exc}")[:500])


@dataclass(frozen=True)
class EvalTransform:
    """An evaluation preset: resize the short side, center-crop, then (in the actor) normalize.

    Built from the model's own settings (torchvision weights' `transforms()`, timm's data config),
    so a prediction here equals what the model's reference transform gives image by image.
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: InterpolationMode = InterpolationMode.BILINEAR

    @classmethod
    def from_torchvision(cls, preset) -> "EvalTransform":
        """From torchvision's `ImageClassification` preset (`weights.transforms()`)."""
        return cls(resize_size=preset.resize_size[0], crop_size=preset.crop_size[0],
                   mean=tuple(preset.mean), std=tuple(preset.std), interpolation=preset.interpolation)

    @classmethod
    def from_timm(cls, data_config: dict) -> "EvalTransform":
        """From timm's `resolve_data_config(...)` (input_size, crop_pct, interpolation, mean, std)."""
        crop = int(data_config["input_size"][-1])
        return cls(resize_size=int(crop / data_config.get("crop_pct", 0.875)), crop_size=crop,
                   mean=tuple(data_config["mean"]), std=tuple(data_config["std"]),
                   interpolation=InterpolationMode(data_config.get("interpolation", "bilinear")))

    def resize_and_crop(self) -> v2.Compose:
        return v2.Compose([v2.Resize(self.resize_size, interpolation=self.interpolation, antialias=True),
                           v2.CenterCrop(self.crop_size)])


def open_image(data: bytes, min_size: int, max_pixels: int) -> Image.Image:
    """Read the header only, and refuse an image that would decode to more than `max_pixels`.

    JPEGs at least 4x larger than needed are decoded at reduced size (DCT scaling, 1/2 to 1/8), which
    keeps quality and skips most of the work, so a JPEG is judged by the size it will be decoded at: a
    108 MP photo decodes to 1.7 MP. Every other format is judged by Pillow's own decompression-bomb
    guard (image, frame and tile sizes), set to `max_pixels`.
    """
    if not data:
        raise EmptyFile("empty file (0 bytes)")
    if data.startswith(JPEG_MAGIC):  # Image.open would judge the full size: open the JPEG plugin directly
        image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
        image.draft("RGB", (2 * min_size, 2 * min_size))
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(f"{width * height:,} pixels ({width}x{height} at reduced size)", max_pixels)
        return image
    Image.MAX_IMAGE_PIXELS = max_pixels  # the same value for every call in a job's processes
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotAnImage("cannot identify image: the bytes are in no format Pillow reads") from None


def decode_image(data: bytes, min_size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Bytes -> upright RGB PIL image. Raises on anything that is not a decodable image (BadImage for
    empty, unknown and too large inputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = open_image(data, min_size, max_pixels)
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds …"
            raise TooLarge(f"{int(size[1]):,} pixels" if size else "an image", max_pixels) from None
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        scale = 1 / 257 if image.mode.startswith("I") else 1.0
        pixels = np.clip(np.asarray(image, dtype=np.float32) * scale, 0, 255)
        image = Image.fromarray(pixels.round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def jpeg_orientation(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> int | None:
    """The EXIF orientation (1-8) of a JPEG the device decoder can take, from its header alone; None
    for anything else (not a JPEG, CMYK, a header PIL rejects, over `max_pixels` at full size), which
    then takes the CPU path and gets that path's reduced-size decoding or error message."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        header = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - the CPU path reports it
        return None
    width, height = header.size
    if header.mode not in _DEVICE_DECODABLE_MODES or width * height > max_pixels:
        return None
    orientation = header.getexif().get(EXIF_ORIENTATION_TAG, 1)
    return orientation if orientation in range(1, 9) else 1


class Preprocessor:
    """The decode stage: read a batch of objects, decode and transform each; failures become error rows.

    With `keep_jpegs` (GPU decode), JPEGs the device decoder can take are passed on undecoded: the batch
    then has `jpeg` (bytes or None), `orientation` (EXIF, 1-8) and `pixels` (the raw uint8 crop of each
    image decoded here, or None) instead of the fixed-shape `image` column.
    """

    def __init__(self, filesystem: pafs.FileSystem, transform: EvalTransform, uri_prefix: str,
                 label_pattern: str | None = None, keep_jpegs: bool = False,
                 storage_timeout_s: float = STORAGE_TIMEOUT_S,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, s3: S3Options | None = None) -> None:
        self.filesystem = filesystem
        self.s3 = s3  # lets keys pyarrow cannot name (`in//a.jpg`) be read too
        self.storage_timeout_s = storage_timeout_s
        self.transform = transform
        self.uri_prefix = uri_prefix
        self.label_pattern = re.compile(label_pattern) if label_pattern else None
        self.keep_jpegs = keep_jpegs
        self.max_image_pixels = max_image_pixels
        self._resize_crop = transform.resize_and_crop()

    def passing_jpegs(self) -> "Preprocessor":
        """This stage with GPU decode on: JPEGs go on to the inference actor undecoded."""
        stage = copy.copy(self)
        stage.keep_jpegs = True
        return stage

    def preprocess(self, data: bytes) -> np.ndarray:
        image = decode_image(data, self.transform.resize_size, self.max_image_pixels)
        return np.asarray(self._resize_crop(image), dtype=np.uint8)

    def true_label(self, uri: str) -> str | None:
        match = self.label_pattern.search(uri)
        if not match:
            return None
        return match.group(1) if match.re.groups else match.group(0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`path` holds input URIs (`s3://bucket/key`, or a local path); a manifest's `key` passes through."""
        uris: Sequence[str] = [str(p) for p in batch[col.PATH]]
        paths = [uri.removeprefix(self.uri_prefix) for uri in uris]
        crop = self.transform.crop_size
        images = np.zeros((len(paths), crop, crop, 3), dtype=np.uint8)
        failures: list[Failure | None] = [None] * len(paths)
        jpegs: list[bytes | None] = [None] * len(paths)
        orientations = np.ones(len(paths), dtype=np.int8)
        for start in range(0, len(paths), READ_AT_ONCE):
            payloads = read_many(self.filesystem, paths[start:start + READ_AT_ONCE], self.storage_timeout_s, self.s3)
            for index, payload in enumerate(payloads, start):
                if isinstance(payload, Exception):
                    failures[index] = Failure("read", f"read failed: {failure(payload).message}")
                    continue
                try:
                    orientation = jpeg_orientation(payload, self.max_image_pixels) if self.keep_jpegs else None
                    if orientation is None:
                        images[index] = self.preprocess(payload)
                    else:
                        jpegs[index], orientations[index] = payload, orientation
                except Exception as exc:  # noqa: BLE001 - any undecodable input becomes an error row
                    failures[index] = failure(exc)
        out = {col.PATH: np.array(uris, dtype=object),
               col.ERROR: np.array([f and f.message for f in failures], dtype=object),
               col.ERROR_KIND: np.array([f and f.kind for f in failures], dtype=object)}
        if self.keep_jpegs:
            decoded_here = [jpeg is None and f is None for jpeg, f in zip(jpegs, failures)]
            out |= {col.JPEG: np.array(jpegs, dtype=object), col.ORIENTATION: orientations,
                    col.PIXELS: np.array([image.tobytes() if keep else None
                                        for image, keep in zip(images, decoded_here)], dtype=object)}
        else:
            out[col.IMAGE] = images
        if col.KEY in batch:
            out[col.KEY] = batch[col.KEY]
        if self.label_pattern:
            out[col.TRUE_LABEL] = np.array([self.true_label(uri) for uri in uris], dtype=object)
        return out
