"""The commit benchmark runs end to end on a few thousand staged rows and writes its figures (never timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RAY_ENV

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the benchmark process starts its own S3 server and Ray


def test_commit_bench_writes_its_figures(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | RAY_ENV
    command = [sys.executable, "-m", "bench.commit_memory", "--rows", "2500", "--rows-per-file", "1000",
               "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--label", "smoke"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = (tmp_path / "results").glob("*-commit-n2500-smoke.json")
    result = json.loads(result_file.read_text())
    assert (result["rows"], result["rows_per_file"], result["commit_kind"]) == (2500, 1000, "footers + record")
    assert result["commit_s"] > 0 and 0 < result["driver_rss_before_mib"] <= result["driver_rss_peak_mib"]
    assert result["machine"]["cores"] == os.cpu_count() and result["command"].startswith("python -m bench.commit_memory")
    assert not (tmp_path / "work").exists()  # the staged and committed files are removed afterwards
