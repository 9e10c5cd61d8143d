"""`--gpu-decode on` through the real job (Ray cluster, S3), on CPU: JPEGs reach the inference actor as
bytes, a PNG and the cut file take the CPU stage, and every prediction is what the CPU decode path gives."""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer.config import JobConfig
from devkit.samples import sample_images
from batchinfer.models import load_model
from batchinfer.pipeline import run_job
from batchinfer.predictor import InferenceSettings, Predictor
from batchinfer.preprocess import Preprocessor
from batchinfer.storage import s3_filesystem

LITE0 = "timm:efficientnet_lite0"


def test_gpu_decode_on_cpu_device_matches_cpu_decode(ray_cluster, samples, s3_options, lite0, tmp_path) -> None:
    config = JobConfig(input_uri=samples["images"], output_uri="s3://samples/out/gpu-decode/", model=LITE0,
                       weights=samples["checkpoint"], device="cpu", gpu_decode="on", batch_size=3,
                       s3=s3_options)
    summary = run_job(config).summary
    table = pq.read_table("samples/out/gpu-decode/", filesystem=s3_filesystem(s3_options),
                          columns=["path", "label", "score", "error"])
    job_rows = {row["path"].removeprefix(samples["images"]): row for row in table.to_pylist()}

    images = sample_images()
    for name, data in images.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    stage = Preprocessor(pafs.LocalFileSystem(), load_model(lite0).transform, "")
    reference = Predictor(lite0, InferenceSettings(device="cpu"))(
        stage({"path": np.array([str(tmp_path / name) for name in images], dtype=object)}))

    assert summary["rows"] == len(images) == len(job_rows) and summary["errors"] == 1
    for expected in reference.to_pylist():
        ours = job_rows[expected["path"].removeprefix(f"{tmp_path}/")]
        assert ours["label"] == expected["label"], expected["path"]
        assert (ours["error"] is None) == (expected["error"] is None), expected["path"]
        if ours["score"] is not None:
            assert abs(ours["score"] - expected["score"]) < 0.02, expected["path"]
    assert job_rows["generated/coffee-rotated.jpg"]["label"] == "espresso"  # EXIF orientation, on the actor
