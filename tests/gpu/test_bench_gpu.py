"""bench/gpu.py keeps working: a small CPU run of every stage it measures (the GPU run is the same script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_runs_on_cpu(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--images", "12", "--models",
         "resnet18", "--batch-sizes", "4", "--actor-batch", "6", "--repeats", "1", "--threads", "1",
         "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [row["batch_size"] for row in results["ceiling"]] == [4]
    assert results["ceiling"][0]["images_per_s"] > 0
    decode = results["decode"]
    assert decode["cpu_stage_pil_per_core"] > 0 and decode["device_decode_resize_crop"] > 0
    assert decode["cpu_stage_header_only_per_core"] > decode["cpu_stage_pil_per_core"]
    actor = results["actor"][0]
    assert actor["model"] == "resnet18" and actor["images"] == 12
    assert actor["gpu_decode_on_images_per_s"] > 0 and actor["gpu_decode_off_images_per_s"] > 0
    assert "model-only ceiling" in result.stdout and "actor loop" in result.stdout
