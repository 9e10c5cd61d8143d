"""The benchmark harness runs end to end on a handful of images and writes every section (never timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RAY_ENV

REPO = Path(__file__).resolve().parents[2]
# The benchmark process starts its own S3 server and Ray, and runs four stages (about a minute): the
# slow tier, which CI runs after the gate.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_harness_writes_all_sections(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | RAY_ENV
    command = [sys.executable, "-m", "bench.run", "--count", "12", "--size", "160x120", "--model", "resnet18",
               "--batch-size", "4", "--baseline-batch-size", "6", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = (tmp_path / "results").glob("*.json")
    results = json.loads(result_file.read_text())

    assert results["settings"] | {"count": 12, "model": "resnet18", "batch_size": 4,
                                  "baseline_batch_size": 6} == results["settings"]
    assert results["dataset"]["count"] == 12 and results["dataset"]["mean_bytes"] > 0
    assert results["machine"]["cores"] >= 1
    assert results["decode"]["images"] == 12 and results["decode"]["images_per_s_per_core"] > 0
    ceiling = results["ceiling"]
    assert ceiling["images_per_s"] > 0 and ceiling["threads"] >= 1 and ceiling["precision"] == "fp32"
    assert ceiling["conv_bn_folded"] and ceiling["unfolded_images_per_s"] > 0
    for stage in ("e2e", "baseline"):
        run = results[stage]
        assert run["images"] == 12
        assert run["whole_run_images_per_s"] > 0 and 0 < run["first_output_s"] <= run["whole_run_s"]
        assert run["peak_pss_mib"] > 0 and run["peak_rss_mib"] >= run["peak_pss_mib"]
        assert run["processes"] > 1 and run["object_store_spilled_mib"] >= 0
        assert max(run["peak_pss_mib_by_quarter"]) == run["peak_pss_mib"]
        by_process = run["peak_pss_mib_by_process"]  # each entry and the total rounded to 0.1 MiB
        assert abs(sum(by_process.values()) - run["peak_pss_mib"]) <= 0.05 * (len(by_process) + 1) + 1e-6
        assert any(title.startswith("ray::") for title in run["peak_pss_mib_by_process"])
    e2e = results["e2e"]
    assert e2e["job_rows"] == 12 and e2e["job_errors"] == 0 and e2e["job_startup_s"] > 0
    assert e2e["whole_run_images_per_s"] == round(12 / e2e["whole_run_s"], 2)
    ratios = results["ratios"]
    assert ratios["e2e_whole_over_ceiling"] == round(e2e["whole_run_images_per_s"] / ceiling["images_per_s"], 3)
    assert ratios["e2e_whole_over_baseline_whole"] == round(
        e2e["whole_run_images_per_s"] / results["baseline"]["whole_run_images_per_s"], 3)
    cores, decode_rate = results["machine"]["cores"], results["decode"]["images_per_s_per_core"]
    limit = cores / (cores / ceiling["images_per_s"] + 1 / decode_rate)
    assert ratios["stage_sum_limit_images_per_s"] == round(limit, 2)
    assert set(ratios) == {f"e2e_{kind}_over_{reference}" for kind in ("steady", "pipeline", "whole")
                           for reference in ("ceiling", f"baseline_{kind}")} | {
                               "stage_sum_limit_images_per_s", "e2e_steady_over_stage_sum_limit",
                               "e2e_middle_half_over_stage_sum_limit"}
    assert "model-only ceiling" in done.stdout and "naive baseline whole run" in done.stdout

    report = subprocess.run([sys.executable, "-m", "bench.report", str(result_file)], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert f"| model-only ceiling | {ceiling['images_per_s']:.1f} |" in report
    assert f"| e2e_whole_over_ceiling | {ratios['e2e_whole_over_ceiling']:.2f} |" in report
