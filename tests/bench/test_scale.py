"""The scale stage runs end to end on a few dozen tiny objects and writes every figure (never timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RAY_ENV

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]  # its own S3 server and Ray; three stages: make test-slow
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
    # A staged file holds at most --rows-per-file rows; when no poll saw one before the commit removed
    # the staging area (a loaded machine), the harness counts the whole output at the pipeline's end.
    first_rows_at_most = 20 if job["first_output_seen_while_running"] else COUNT
    assert 0 < job["first_output_s"] <= job["whole_run_s"] and 0 < job["first_output_rows"] <= first_rows_at_most
    assert job["whole_run_images_per_s"] == round(COUNT / job["whole_run_s"], 2)
    anchor = run["read_images"]
    assert anchor["images"] == anchor["rows_read"] == COUNT
    assert 0 < anchor["first_row_s"] <= anchor["whole_run_s"]
    for stage in (job, anchor):
        # The driver's kernel high-water mark is at least any sample of it; the tree holds the driver.
        assert 0 < stage["driver_peak_rss_mib_sampled"] <= stage["driver_peak_rss_mib"]
        assert 0 < stage["driver_rss_before_mib"] <= stage["driver_peak_rss_mib"]
        assert stage["driver_rss_before_mib"] <= stage["driver_high_water_after_shutdown_mib"]
        # Where in the run the driver grew: its peak in each tenth of the sampled time.
        by_tenth = stage["driver_peak_rss_mib_by_tenth"]
        assert len(by_tenth) == 10 and max(by_tenth) == stage["driver_peak_rss_mib_sampled"]
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


def test_slopes_and_targets_follow_the_driver_figures() -> None:
    """The derived figures from three N (pure arithmetic on the per-N figures; no Ray, no S3)."""
    from bench.scale import slopes, targets

    def run(count: int, rss_mib: float, first_s: float, rate: float) -> dict:
        return {"count": count, "job": {"driver_peak_rss_mib": rss_mib, "first_output_s": first_s,
                                        "whole_run_images_per_s": rate}}

    runs = [run(100_000, 1000.0, 30.0, 400.0), run(10_000, 990.0, 20.0, 300.0), run(1_000_000, 1090.0, 50.0, 380.0)]
    job = slopes(runs, "job")
    mib = 2**20
    assert job["rss_bytes_per_object_by_step"] == [
        {"from": 10_000, "to": 100_000, "bytes_per_object": round(10 * mib / 90_000, 1)},
        {"from": 100_000, "to": 1_000_000, "bytes_per_object": round(90 * mib / 900_000, 1)}]
    assert job["rss_bytes_per_object"] == round(100 * mib / 990_000, 1) and job["driver_rss_growth_mib"] == 100.0
    expected_gib = (1090 * mib + job["rss_bytes_per_object"] * 99_000_000) / 2**30
    assert job["extrapolated_driver_rss_gib_at_100m"] == round(expected_gib, 2)
    assert slopes(runs, "read_images") == {} and slopes(runs[:1], "job") == {}
    assert targets(runs) == {"from_n": 10_000, "to_n": 1_000_000, "driver_rss_growth_mib": 100.0,
                             "first_output_largest_over_smallest": 2.5, "images_per_s_largest_over_previous": 0.95}
