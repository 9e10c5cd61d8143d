"""Decode (EXIF, odd modes, decompression bombs) and the model's own eval transform, in batches.

The decode stage hands the model fixed-shape uint8 HWC crops; normalization to float happens in the
inference actor, so only a quarter of the bytes crosses between stages.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode, v2

from batchinfer.storage import STORAGE_TIMEOUT_S, read_many

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
JPEG_MAGIC = b"\xff\xd8\xff"
EXIF_ORIENTATION_TAG = 0x0112
_DEVICE_DECODABLE_MODES = ("RGB", "L")  # CMYK/YCCK JPEGs stay on the CPU path, which converts them right


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


def decode_image(data: bytes, min_size: int) -> Image.Image:
    """Bytes -> upright RGB PIL image. Raises on anything that is not a decodable image.

    JPEGs at least 4x larger than needed are decoded at reduced size (DCT scaling), which keeps
    quality and skips most of the decoding work.
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (2 * min_size, 2 * min_size))
        image.load()
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


def jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1-8) of a JPEG the device decoder can take, from its header alone; None
    for anything else (not a JPEG, CMYK, a header PIL rejects, a decompression bomb), which then takes
    the CPU path and gets that path's decoding or error message."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - the CPU path reports it
        return None
    if header.format != "JPEG" or header.mode not in _DEVICE_DECODABLE_MODES:
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
                 storage_timeout_s: float = STORAGE_TIMEOUT_S) -> None:
        self.filesystem = filesystem
        self.storage_timeout_s = storage_timeout_s
        self.transform = transform
        self.uri_prefix = uri_prefix
        self.label_pattern = re.compile(label_pattern) if label_pattern else None
        self.keep_jpegs = keep_jpegs
        self._resize_crop = transform.resize_and_crop()

    def passing_jpegs(self) -> "Preprocessor":
        """This stage with GPU decode on: JPEGs go on to the inference actor undecoded."""
        pattern = self.label_pattern.pattern if self.label_pattern else None
        return Preprocessor(self.filesystem, self.transform, self.uri_prefix, pattern, keep_jpegs=True,
                            storage_timeout_s=self.storage_timeout_s)

    def preprocess(self, data: bytes) -> np.ndarray:
        image = decode_image(data, self.transform.resize_size)
        return np.asarray(self._resize_crop(image), dtype=np.uint8)

    def true_label(self, uri: str) -> str | None:
        match = self.label_pattern.search(uri)
        if not match:
            return None
        return match.group(1) if match.re.groups else match.group(0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths: Sequence[str] = [str(p) for p in batch["path"]]
        crop = self.transform.crop_size
        images = np.zeros((len(paths), crop, crop, 3), dtype=np.uint8)
        errors: list[str | None] = [None] * len(paths)
        jpegs: list[bytes | None] = [None] * len(paths)
        orientations = np.ones(len(paths), dtype=np.int8)
        for index, payload in enumerate(read_many(self.filesystem, list(paths), self.storage_timeout_s)):
            try:
                if isinstance(payload, Exception):
                    raise OSError(f"read failed: {payload}")
                orientation = jpeg_orientation(payload) if self.keep_jpegs else None
                if orientation is None:
                    images[index] = self.preprocess(payload)
                else:
                    jpegs[index], orientations[index] = payload, orientation
            except Exception as exc:  # noqa: BLE001 - any undecodable input becomes an error row
                errors[index] = f"{type(exc).__name__}: {exc}"[:500]
        uris = [self.uri_prefix + path for path in paths]
        out = {"path": np.array(uris, dtype=object), "error": np.array(errors, dtype=object)}
        if self.keep_jpegs:
            decoded_here = [jpeg is None and error is None for jpeg, error in zip(jpegs, errors)]
            out |= {"jpeg": np.array(jpegs, dtype=object), "orientation": orientations,
                    "pixels": np.array([image.tobytes() if keep else None
                                        for image, keep in zip(images, decoded_here)], dtype=object)}
        else:
            out["image"] = images
        if self.label_pattern:
            out["true_label"] = np.array([self.true_label(uri) for uri in uris], dtype=object)
        return out
