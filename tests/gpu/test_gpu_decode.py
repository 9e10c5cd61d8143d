"""GPU decode (`--gpu-decode`) gives what the CPU decode stage gives: same code on CPU here, nvjpeg on CUDA.

Real photos, real pretrained weights; the CUDA-only tests skip on machines without a GPU.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from PIL import Image

from batchinfer.gpu_decode import ORIENTATIONS, DeviceDecoder
from batchinfer.models import load_model
from batchinfer.predictor import (CPU_BATCH_SIZE, CUDA_BATCH_SIZES, InferenceSettings, Predictor,
                                  default_batch_size)
from batchinfer.preprocess import Preprocessor, decode_image, jpeg_orientation
from tests.gpu.conftest import PHOTOS, jpeg, needs_cuda


def cpu_crops(preprocessor: Preprocessor, payloads: list[bytes]) -> np.ndarray:
    """What the CPU decode stage makes: (N, crop, crop, 3) uint8."""
    return np.stack([preprocessor.preprocess(data) for data in payloads]).astype(np.int16)


def device_crops(decoder: DeviceDecoder, payloads: list[bytes]) -> np.ndarray:
    crops, errors = decoder(payloads, [jpeg_orientation(data) for data in payloads])
    assert errors == [None] * len(payloads)
    return crops.permute(0, 2, 3, 1).cpu().numpy().astype(np.int16)


def write_files(directory, files: dict[str, bytes]) -> list[str]:
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return [str(directory / name) for name in files]


@pytest.fixture(scope="module")
def transform(lite0):
    return load_model(lite0).transform


def test_device_decode_on_cpu_matches_cpu_stage(photo_jpegs, transform) -> None:
    """Decode + resize + crop as tensors equals PIL's to within one grey level per pixel, except where the
    CPU stage decodes a ≥4x oversized JPEG at reduced size (retina.jpg): still close on average."""
    payloads = list(photo_jpegs.values())
    difference = np.abs(cpu_crops(Preprocessor(pafs.LocalFileSystem(), transform, ""), payloads)
                        - device_crops(DeviceDecoder(transform, torch.device("cpu")), payloads))
    for name, per_image in zip(photo_jpegs, difference):
        assert per_image.mean() < (1.5 if name == "retina.jpg" else 0.05), name
        if name != "retina.jpg":
            assert per_image.max() <= 1, name


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_matches_pil(orientation: int, transform) -> None:
    """A photo stored turned, with the EXIF tag saying how to show it, comes out as PIL shows it."""
    photo = Image.open(PHOTOS / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(photo, quality=95, exif=exif.tobytes())
    assert jpeg_orientation(data) == orientation
    upright = np.asarray(decode_image(data, 10_000), dtype=np.int16)  # PIL + exif_transpose, full size
    decoder = DeviceDecoder(transform, torch.device("cpu"))
    ours = ORIENTATIONS[orientation](decoder._decode_on_device([data])[0]).permute(1, 2, 0).numpy()
    assert ours.shape == upright.shape
    assert np.abs(ours.astype(np.int16) - upright).max() <= 1


def test_routing_keeps_only_device_decodable_jpegs(tmp_path, transform) -> None:
    """JPEGs (incl. progressive, greyscale) travel as bytes; CMYK JPEGs and PNGs are decoded on the CPU;
    a file whose header PIL can't read is an error row from the decode stage."""
    photo = Image.open(PHOTOS / "coffee.png").convert("RGB")
    files = {"baseline.jpg": jpeg(photo), "progressive.jpg": jpeg(photo, progressive=True),
             "grey.jpg": jpeg(photo.convert("L")), "cmyk.jpg": jpeg(photo.convert("CMYK")),
             "photo.png": (PHOTOS / "coffee.png").read_bytes(), "garbage.jpg": b"\xff\xd8\xff" + b"x" * 50}
    out = Preprocessor(pafs.LocalFileSystem(), transform, "").passing_jpegs()(
        {"path": np.array(write_files(tmp_path, files), dtype=object)})
    kinds = {name: "jpeg" if jpeg_bytes is not None else "pixels" if pixels is not None else "error"
             for name, jpeg_bytes, pixels in zip(files, out["jpeg"], out["pixels"])}
    assert kinds == {"baseline.jpg": "jpeg", "progressive.jpg": "jpeg", "grey.jpg": "jpeg",
                     "cmyk.jpg": "pixels", "photo.png": "pixels", "garbage.jpg": "error"}
    assert out["error"][5] and all(error is None for error in out["error"][:5])
    crop = transform.crop_size
    assert {len(pixels) for pixels in out["pixels"] if pixels is not None} == {crop * crop * 3}


def test_truncated_jpeg_falls_back_then_becomes_error_row(lite0, photo_jpegs) -> None:
    """Header fine, scan data cut: the device decoder rejects it, the CPU fallback too -> error row; the
    other images of the batch are still decoded (decode_jpeg on a list is all-or-nothing)."""
    good = photo_jpegs["rocket.jpg"]
    payloads = [good, good[: len(good) // 2], photo_jpegs["coffee.jpg"]]
    crops, errors = DeviceDecoder(load_model(lite0).transform, torch.device("cpu"))(payloads, [1, 1, 1])
    assert errors[0] is None and errors[2] is None
    assert errors[1].kind == "decode" and "truncated" in errors[1].message.lower()
    assert crops[0].float().std() > 10 and crops[2].float().std() > 10


def test_predictions_agree_with_cpu_decode(tmp_path, lite0, photo_jpegs) -> None:
    """End to end through the job's decode stage and actor, without Ray: the same top-1 class for every
    photo and near-equal scores, in forward batches smaller than the call (exercises the staging loop)."""
    transform = load_model(lite0).transform
    files = photo_jpegs | {"coffee.png": (PHOTOS / "coffee.png").read_bytes(), "cut.jpg": b"\xff\xd8\xff\xe0"}
    batch = {"path": np.array(write_files(tmp_path, files), dtype=object)}
    stage = Preprocessor(pafs.LocalFileSystem(), transform, "")
    predictor = Predictor(lite0, InferenceSettings(device="cpu", batch_size=3))
    expected = predictor(stage(batch)).to_pylist()
    ours = predictor(stage.passing_jpegs()(batch)).to_pylist()
    assert [row["path"] for row in ours] == [row["path"] for row in expected]
    for mine, theirs in zip(ours, expected):
        assert (mine["error"] is None) == (theirs["error"] is None), mine["path"]
        if mine["path"].endswith("retina.jpg"):  # the CPU stage decodes it at half size (JPEG draft)
            assert mine["label"] in theirs["topk_labels"] and theirs["label"] in mine["topk_labels"]
            continue
        assert mine["label"] == theirs["label"], mine["path"]
        if mine["score"] is not None:
            assert abs(mine["score"] - theirs["score"]) < 0.02, mine["path"]
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in ours}
    assert by_name["coffee.jpg"]["label"] == by_name["coffee.png"]["label"] == "espresso"
    assert by_name["chelsea.jpg"]["label"] in ("tabby", "tiger cat", "Egyptian cat")
    assert by_name["cut.jpg"]["error"] and by_name["cut.jpg"]["label"] is None


def test_forward_batch_size_does_not_change_results(lite0, photo_jpegs, transform) -> None:
    crops = np.stack([Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(data)
                      for data in photo_jpegs.values()])
    batch = {"path": np.array(list(photo_jpegs), dtype=object), "image": crops,
             "error": np.array([None] * len(crops), dtype=object)}
    rows = np.arange(len(crops))
    whole = Predictor(lite0, InferenceSettings(device="cpu", batch_size=64)).classify(batch, rows)
    split = Predictor(lite0, InferenceSettings(device="cpu", batch_size=3)).classify(batch, rows)
    assert np.array_equal(whole[1], split[1])
    assert np.allclose(whole[0], split[0], atol=1e-5)


def test_default_batch_size_on_cpu() -> None:
    assert default_batch_size(torch.device("cpu")) == CPU_BATCH_SIZE


@needs_cuda
def test_default_batch_size_follows_gpu_memory() -> None:
    memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    expected = next(size for floor, size in CUDA_BATCH_SIZES if memory_gib >= floor)
    assert default_batch_size(torch.device("cuda")) == expected


@needs_cuda
def test_nvjpeg_decode_matches_cpu_stage(photo_jpegs, transform) -> None:
    """nvjpeg's IDCT/upsampling differ slightly from libjpeg-turbo's: close, not equal."""
    payloads = [data for name, data in photo_jpegs.items() if name != "retina.jpg"]
    difference = np.abs(cpu_crops(Preprocessor(pafs.LocalFileSystem(), transform, ""), payloads)
                        - device_crops(DeviceDecoder(transform, torch.device("cuda")), payloads))
    assert difference.mean(axis=(1, 2, 3)).max() < 2


@needs_cuda
def test_nvjpeg_cut_file_leaves_batch_intact(photo_jpegs, transform) -> None:
    """A cut file in the batch (nvjpeg rejects it, or conceals the damage) leaves its neighbour intact."""
    good = photo_jpegs["rocket.jpg"]
    crops, errors = DeviceDecoder(transform, torch.device("cuda"))([good, good[: len(good) // 2]], [1, 1])
    expected = Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(good).astype(np.int16)
    ours = crops[0].permute(1, 2, 0).cpu().numpy().astype(np.int16)
    assert errors[0] is None and np.abs(ours - expected).mean() < 2


@needs_cuda
def test_staged_forward_batches_on_cuda_match_one_batch(lite0, photo_jpegs, tmp_path) -> None:
    """Side-stream staging (decode/copy of batch i+1 during batch i) gives what one forward batch gives."""
    transform = load_model(lite0).transform
    batch = Preprocessor(pafs.LocalFileSystem(), transform, "").passing_jpegs()(
        {"path": np.array(write_files(tmp_path, photo_jpegs), dtype=object)})
    rows = np.arange(len(photo_jpegs))
    whole, staged = (Predictor(lite0, InferenceSettings(device="cuda", precision="fp32", batch_size=size)
                               ).classify(batch, rows) for size in (64, 2))
    assert np.array_equal(whole[1][:, 0], staged[1][:, 0])
    assert np.allclose(whole[0], staged[0], atol=1e-3)


@needs_cuda
def test_mixed_precision_keeps_top1(lite0, photo_jpegs, transform) -> None:
    crops = np.stack([Preprocessor(pafs.LocalFileSystem(), transform, "").preprocess(data)
                      for data in photo_jpegs.values()])
    fp32 = Predictor(lite0, InferenceSettings(device="cuda", precision="fp32")).forward(crops)
    auto = Predictor(lite0, InferenceSettings(device="cuda", precision="auto")).forward(crops)
    assert (fp32[1][:, 0] == auto[1][:, 0]).mean() >= 0.85
