"""The scale stage runs end to end on a few dozen tiny objects and writes every figure (never timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import RAY_ENV

REPO = Path(__file__).resolve().parents[2]
COUNT = 50


def test_scale_stage_writes_every_figure(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | RAY_ENV
    command = [sys.executable, "-m", "bench.scale", "--counts", str(COUNT), "--layout", "dirs",
               "--rows-per-file", "20", "--upload-threads", "4", "--workdir", str(tmp_path / "work"),
               "--results", str(tmp_path / "results")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = (tmp_path / "results").glob("*-scale-dirs-n50.json")
    results = json.loads(result_file.read_text())

    assert results["stage"] == "scale" and results["settings"]["counts"] == [COUNT]
    assert len(results["machine"]["load_avg_1_5_15_at_start"]) == 3
    [run] = results["runs"]
    dataset = run["dataset"]
    assert run["count"] == dataset["count"] == COUNT and dataset["uploaded"] == COUNT
    assert 0 < dataset["mean_bytes"] < 2000 and dataset["uri"].endswith("/dirs/16px/n50/")

    job = run["job"]
    assert job["images"] == job["rows_committed"] == COUNT and job["errors"] == 0
    assert 0 < job["first_output_s"] <= job["whole_run_s"] and 0 < job["first_output_rows"] <= 20
    assert job["whole_run_images_per_s"] == round(COUNT / job["whole_run_s"], 2)
    anchor = run["read_images"]
    assert anchor["images"] == anchor["rows_read"] == COUNT
    assert 0 < anchor["first_row_s"] <= anchor["whole_run_s"]
    for stage in (job, anchor):
        # The driver's kernel high-water mark is at least any sample of it; the tree holds the driver.
        assert 0 < stage["driver_peak_rss_mib_sampled"] <= stage["driver_peak_rss_mib"]
        assert 0 < stage["driver_rss_before_mib"] <= stage["driver_peak_rss_mib"]
        assert stage["ray_start_s"] > 0
        assert stage["tree_peak_rss_mib"] >= stage["driver_peak_rss_mib_sampled"] and stage["processes"] > 1
        assert 0 < stage["driver_cpu_s"] <= stage["tree_cpu_s"]
        assert stage["tree_cpu_s_per_1k"] == round(1000 * stage["tree_cpu_s"] / COUNT, 3)
        assert len(stage["load_avg_1_5_15_at_end"]) == 3
    assert run["ratios"]["first_row_job_over_read_images"] == round(job["first_output_s"] / anchor["first_row_s"], 3)
    assert set(results["slopes"]) == {"job", "read_images"} and results["targets"] == {}  # one N: no slope

    # A second run reuses the uploaded objects.
    again = subprocess.run([*command, "--stages", "read_images"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = json.loads(max((tmp_path / "results").glob("*.json"), key=lambda path: path.name).read_text())
    assert second["runs"][0]["dataset"]["uploaded"] == 0 and "job" not in second["runs"][0]

    report = subprocess.run([sys.executable, "-m", "bench.report", str(result_file)], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert f"| {COUNT} | " in report and f"| {job['first_output_s']:.1f} |" in report
