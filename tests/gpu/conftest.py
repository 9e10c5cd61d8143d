"""Fixtures for the GPU fast path: the real EfficientNet-Lite0 weights and real photos, on local disk."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from tests.support import photo_dir


PHOTOS = photo_dir()
JPEG_PHOTOS = ["rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"]
PNG_PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "motorcycle_left.png", "camera.png"]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (nvjpeg decode, CUDA streams, GPU memory); this machine has none — the same "
           "code runs with device=cpu in the other tests here")


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photo_jpegs() -> dict[str, bytes]:
    """Real photos as JPEG files: scikit-image's own JPEGs, and its PNG photos encoded at quality 95."""
    photos = {name: (PHOTOS / name).read_bytes() for name in JPEG_PHOTOS}
    photos |= {name.replace(".png", ".jpg"): jpeg(Image.open(PHOTOS / name).convert("RGB"), quality=95)
               for name in PNG_PHOTOS}
    return photos


