"""JPEG decoding inside the inference actor: nvjpeg on CUDA, libjpeg-turbo on CPU, the same code for both.

With GPU decode on, the decode task stage only reads the bytes and looks at each JPEG's header
(`jpeg_orientation`); JPEGs travel on undecoded, everything else is decoded on the CPU as before. The
actor (`DeviceDecoder`) decodes the JPEGs of a batch in one `torchvision.io.decode_jpeg` call on its
device, turns them upright, resizes (antialiased) and center-crops them there. An image the device
decoder rejects is decoded by the CPU path (`decode_image`); if that fails too it becomes an error row.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from batchinfer.preprocess import EvalTransform, Failure, decode_image, failure

# EXIF orientation -> how to turn a (..., H, W) image upright (what PIL's ImageOps.exif_transpose does).
ORIENTATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    1: lambda image: image,
    2: lambda image: image.flip(-1),
    3: lambda image: image.flip(-2, -1),
    4: lambda image: image.flip(-2),
    5: lambda image: image.transpose(-2, -1),
    6: lambda image: torch.rot90(image, k=-1, dims=(-2, -1)),
    7: lambda image: image.transpose(-2, -1).flip(-2, -1),
    8: lambda image: torch.rot90(image, k=1, dims=(-2, -1)),
}


class DeviceDecoder:
    """Encoded JPEGs -> (N, 3, crop, crop) uint8 crops on `device`, with per-image CPU fallback."""

    def __init__(self, transform: EvalTransform, device: torch.device) -> None:
        self.transform = transform
        self.device = device
        self._cpu_resize_crop = transform.resize_and_crop()

    def _decode_on_device(self, payloads: Sequence[bytes]) -> list[torch.Tensor | Exception]:
        """One batched decode_jpeg call; if it fails (it returns all or nothing), one call per image."""
        encoded = [torch.frombuffer(bytearray(payload), dtype=torch.uint8) for payload in payloads]
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            pass
        decoded: list[torch.Tensor | Exception] = []
        for one in encoded:
            try:
                decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError as exc:
                decoded.append(exc)
        return decoded

    def _decode_on_cpu(self, payload: bytes) -> torch.Tensor:
        """The decode task stage's own path (PIL), for what the device decoder rejected."""
        image = decode_image(payload, self.transform.resize_size)
        crop = np.asarray(self._cpu_resize_crop(image), dtype=np.uint8)
        return torch.from_numpy(crop).permute(2, 0, 1).to(self.device)

    def resize_and_crop(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 of one size -> (N, 3, crop, crop) uint8, as the eval transform does."""
        resized = F.resize(images, [self.transform.resize_size], interpolation=self.transform.interpolation,
                           antialias=True)
        return F.center_crop(resized, [self.transform.crop_size])

    def __call__(self, payloads: Sequence[bytes], orientations: Sequence[int]
                 ) -> tuple[torch.Tensor, list[Failure | None]]:
        """Crops for every payload (zeros where both decoders failed) and per-payload errors."""
        crop = self.transform.crop_size
        crops = torch.zeros((len(payloads), 3, crop, crop), dtype=torch.uint8, device=self.device)
        errors: list[Failure | None] = [None] * len(payloads)
        by_size: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = defaultdict(list)
        for index, (decoded, orientation) in enumerate(zip(self._decode_on_device(payloads), orientations)):
            if isinstance(decoded, Exception):
                try:
                    crops[index] = self._decode_on_cpu(payloads[index])
                except Exception as exc:  # noqa: BLE001 - undecodable input becomes an error row
                    errors[index] = failure(exc)
                continue
            upright = ORIENTATIONS[int(orientation)](decoded)
            by_size[tuple(upright.shape)].append((index, upright))
        for group in by_size.values():  # same-sized images are resized in one call
            indices = [index for index, _ in group]
            crops[indices] = self.resize_and_crop(torch.stack([image for _, image in group]))
        return crops, errors
