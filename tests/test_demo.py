"""README's first command, `make demo` (`python -m devkit.demo`), as a newcomer runs it: its own S3 server
and local Ray, then the Parquet and the report left in a local folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from devkit.samples import sample_images
from tests.support import RAY_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts SeaweedFS and a local Ray itself, in a child process (about 30 s)


def test_demo_leaves_the_parquet_and_the_report(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_ADDRESS", "AWS_"))}
    result = subprocess.run([sys.executable, "-m", "devkit.demo", "--into", str(tmp_path / "kept")],
                            env={**env, **RAY_ENV}, capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    kept = tmp_path / "kept"
    table = pq.read_table(kept / "predictions")
    assert table.num_rows == len(sample_images())
    errors = [row["path"] for row in table.to_pylist() if row["error"] is not None]
    assert [path.rsplit("/", 1)[1] for path in errors] == ["truncated.jpg"], errors
    assert (kept / "predictions" / "_SUCCESS").exists()
    assert "<svg" in (kept / "report.html").read_text()
    assert f"file://{kept.resolve() / 'report.html'}" in result.stdout, result.stdout[-2000:]
    assert "espresso" in result.stdout
