"""10,000 small images through the whole job: the right row count, with bounded memory.

Marked slow (about 3-5 minutes on 2 cores); part of `make test`. Alone:
    .venv/bin/python -m pytest tests/reliability/test_load.py -s
It prints the driver's peak RSS, all Ray processes' peak summed PSS (and summed RSS) and the object store's spilling.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from bench.measure import ProcessSampler
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import Driver, job_env, read_output, upload
from tests.support import BIN

pytestmark = pytest.mark.slow

IMAGES = 10_000
BUCKET = "load"
DRIVER_RSS_LIMIT = 2 << 30   # the driver holds no list of the inputs (listing, commit: Ray tasks)
CLUSTER_PSS_LIMIT = 8 << 30  # all Ray processes together (PSS: a shared page counted once, split among its users)


def spilled_mib(cluster) -> float:
    """Object-store spilling so far on the cluster, from `ray memory --stats-only` (which prints a
    "Spilled N MiB" line only once something has been spilled)."""
    result = subprocess.run([str(BIN / "ray"), "memory", "--stats-only", "--address", cluster.address],
                            env=cluster.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Plasma memory usage" in result.stdout, result.stderr[-2000:]
    match = re.search(r"Spilled (\d+(?:\.\d+)?) MiB", result.stdout)
    return float(match.group(1)) if match else 0.0


def test_ten_thousand_images_bounded_memory(store, fault_cluster, tmp_path) -> None:
    upload(store, BUCKET, {f"images/{index // 1000:02d}/{index:05d}.jpg": data
                           for index, data in enumerate(photo_crops(IMAGES, 64, seed=1))})
    spilled_before = spilled_mib(fault_cluster)
    driver = Driver(["--input", f"s3://{BUCKET}/images/", "--output", f"s3://{BUCKET}/out/",
                     "--model", "mobilenet_v3_small", "--weights", "none", "--batch-size", "64", "--top-k", "1"],
                    job_env(store, fault_cluster), tmp_path)
    # Peak RSS of the driver; peak summed PSS of the Ray nodes' processes (each `ray start` and what it
    # started): summed RSS would count every shared page (libraries, the object store's mapped pages) once
    # per process that maps it, so it grows with the number of worker processes, not with memory used.
    driver_memory = ProcessSampler(roots=(driver.process.pid,), interval_s=0.5)
    cluster_memory = ProcessSampler(roots=tuple(node.pid for node in fault_cluster.nodes), interval_s=0.5)
    try:
        with driver_memory, cluster_memory:
            assert driver.wait(timeout_s=3000) == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    driver_peak, cluster_peak = driver_memory.peak_rss_kib << 10, cluster_memory.peak_pss_kib << 10
    table, summary, _ = read_output(store, BUCKET, "out/")
    paths = table["path"].to_pylist()
    figures = {"rows": len(paths), "errors": summary["errors"], "images_per_s": summary["images_per_s"],
               "pipeline_s": summary["pipeline_s"], "driver_peak_rss_mib": driver_peak >> 20,
               "ray_processes_peak_pss_mib": cluster_peak >> 20,
               "ray_processes_peak_rss_sum_mib": cluster_memory.peak_rss_kib >> 10,
               "ray_processes_at_most": cluster_memory.peak_processes,
               "object_store_spilled_mib": spilled_mib(fault_cluster) - spilled_before}
    print("load test:", json.dumps(figures))
    assert len(paths) == len(set(paths)) == IMAGES == summary["rows"] and summary["errors"] == 0
    assert driver_peak < DRIVER_RSS_LIMIT and cluster_peak < CLUSTER_PSS_LIMIT, figures
