"""The whole job through real S3 (SeaweedFS), a real two-node Ray cluster and real pretrained weights."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest

from batchinfer.config import JobConfig
from batchinfer.pipeline import run_job
from batchinfer.columns import prediction_schema
from batchinfer.storage import s3_filesystem
from tests.support import BIN, RAY_ENV, run_cli, wait_until

LITE0 = "timm:efficientnet_lite0"


def read_output(s3_options, uri: str):
    fs = s3_filesystem(s3_options)
    prefix = uri.removeprefix("s3://").rstrip("/")
    table = pq.read_table(prefix, filesystem=fs)
    summary = json.loads(fs.open_input_stream(f"{prefix}.batchinfer/summary.json").read())
    success = fs.get_file_info(f"{prefix}/_SUCCESS")
    return table, summary, success


@pytest.fixture(scope="module")
def lite0_run(ray_cluster, samples, s3_options):
    """One run of the pretrained EfficientNet-Lite0 over the sample photos, shared by several checks."""
    config = JobConfig(input_uri=samples["images"], output_uri="s3://samples/out/lite0/", model=LITE0,
                       weights=samples["checkpoint"], batch_size=4, s3=s3_options)
    summary = run_job(config).summary
    return summary, read_output(s3_options, config.output_uri)


def test_real_photos_are_classified(lite0_run) -> None:
    _, (table, _, _) = lite0_run
    rows = {row["path"].rsplit("/", 1)[1]: row for row in table.to_pylist()}
    assert rows["coffee.png"]["label"] == "espresso" and rows["coffee.png"]["score"] > 0.5
    assert rows["chelsea.png"]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert rows["coffee-rotated.jpg"]["label"] == "espresso"  # EXIF orientation honored
    assert rows["rocket.jpg"]["label"] in {"missile", "projectile", "space shuttle"}


def test_output_contract(lite0_run, samples) -> None:
    summary, (table, written, success) = lite0_run
    assert table.schema.equals(prediction_schema(False), check_metadata=False)
    assert table.num_rows == int(samples["count"]) == len(set(table["path"].to_pylist()))
    assert all(path.startswith("s3://samples/images/") for path in table["path"].to_pylist())
    assert success.size == 0
    assert written == summary
    assert summary["rows"] == table.num_rows and summary["ok"] + summary["errors"] == summary["rows"]
    assert summary["images_per_s"] > 0 and summary["model"] == LITE0
    assert sum(f["rows"] for f in summary["files"]) == table.num_rows
    for row in table.to_pylist():
        if row["error"] is None:
            assert len(row["topk_labels"]) == len(row["topk_scores"]) == 5
            assert row["topk_labels"][0] == row["label"] and row["topk_scores"][0] == pytest.approx(row["score"])
            assert row["topk_scores"] == sorted(row["topk_scores"], reverse=True)


def test_corrupt_file_is_an_error_row_and_only_it(lite0_run) -> None:
    _, (table, _, _) = lite0_run
    errors = {row["path"].rsplit("/", 1)[1]: row for row in table.to_pylist() if row["error"]}
    assert list(errors) == ["truncated.jpg"]
    assert errors["truncated.jpg"]["label"] is None and errors["truncated.jpg"]["topk_labels"] is None


def test_label_from_path_accuracy(ray_cluster, s3, samples, s3_options) -> None:
    client = s3.client()
    source = client.get_object(Bucket="samples", Key="images/photos/coffee.png")["Body"].read()
    cat = client.get_object(Bucket="samples", Key="images/photos/chelsea.png")["Body"].read()
    labeled = {"espresso/coffee.png": source, "tabby/chelsea.png": cat, "goldfish/coffee-too.png": source}
    for key, body in labeled.items():
        client.put_object(Bucket="samples", Key=f"labeled/{key}", Body=body)
    config = JobConfig(input_uri="s3://samples/labeled/", output_uri="s3://samples/out/labeled/", model=LITE0,
                       weights=samples["checkpoint"], label_from_path=r"labeled/([^/]+)/", s3=s3_options)
    summary = run_job(config).summary
    table, _, _ = read_output(s3_options, config.output_uri)
    by_name = {row["path"].rsplit("/", 1)[1]: row for row in table.to_pylist()}
    assert by_name["coffee.png"]["true_label"] == "espresso" and by_name["coffee.png"]["correct"]
    assert by_name["coffee-too.png"]["correct"] is False
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in by_name.values()) / 3)


def test_cli_rerun_refuses_then_overwrites(ray_cluster, samples, cli_env) -> None:
    args = ["run", "--input", samples["images"] + "photos/", "--output", "s3://samples/out/cli/",
            "--model", "resnet18", "--weights", "none", "--batch-size", "8", "--top-k", "3"]
    first = run_cli(args, cli_env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "batchinfer summary" in first.stdout and "images/s" in first.stdout
    again = run_cli(args, cli_env)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert run_cli([*args, "--overwrite"], cli_env).returncode == 0
    resumed = run_cli([*args, "--resume"], cli_env)
    assert resumed.returncode == 0 and "already complete" in resumed.stdout


def test_local_directory_input_and_output(ray_cluster, tmp_path, s3) -> None:
    from devkit.samples import sample_images

    for key, data in list(sample_images().items())[:3]:
        (tmp_path / "in" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / key).write_bytes(data)
    summary = run_job(JobConfig(input_uri=str(tmp_path / "in"), output_uri=f"file://{tmp_path}/out",
                                model="resnet18", weights="none", top_k=2)).summary
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == summary["rows"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert not (tmp_path / "out.batchinfer" / "staging").exists()
    assert json.loads((tmp_path / "out.batchinfer" / "summary.json").read_text())["rows"] == 3
    assert sorted(table["path"].to_pylist())[0].startswith(str(tmp_path / "in"))


@pytest.fixture(scope="module")
def submitted_run(ray_cluster, samples, s3_options):
    """The job submitted the way a KubeRay RayJob submitter does (`ray job submit -- <entrypoint>`) to the
    two-node cluster: the submitter's result and what the job wrote."""
    entrypoint = ["batchinfer", "run", "--input", samples["images"], "--output", "s3://samples/out/submitted/",
                  "--model", LITE0, "--weights", samples["checkpoint"], "--device", "auto"]
    env = {**os.environ, **RAY_ENV, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)

    def submitted() -> subprocess.CompletedProcess | None:
        """One submission; None while the head's job agent has not registered yet ("No available agent":
        the submission was refused before anything ran, so it is tried again, like KubeRay's submitter Job)."""
        result = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", ray_cluster.dashboard_url,
                                 "--", *entrypoint], env=env, capture_output=True, text=True, timeout=900)
        return None if "No available agent" in result.stdout + result.stderr else result

    result = wait_until(submitted, 300, "a job agent on the head to accept the submission", interval_s=5)
    return result, read_output(s3_options, "s3://samples/out/submitted/")


def test_ray_job_submit_on_multi_node_cluster(ray_cluster, submitted_run) -> None:
    result, _ = submitted_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout.lower()
    assert len(ray_cluster.alive_nodes()) == 2


def test_submitted_job_output(submitted_run, samples) -> None:
    _, (table, summary, success) = submitted_run
    assert success.size == 0 and table.num_rows == int(samples["count"])
    assert summary["device"] == "cpu"
    rows = {row["path"].rsplit("/", 1)[1]: row["label"] for row in table.to_pylist()}
    assert rows["coffee.png"] == "espresso"
