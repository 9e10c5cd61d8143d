"""The local S3 server's bulk upload (devkit.seaweed copy_tree), as the scale benchmark fills a bucket."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from devkit.seaweed import FILER_GRPC_OFFSET, SeaweedServer, server_ports


def test_server_ports_are_distinct_and_the_filer_grpc_port_follows_the_http_port() -> None:
    ports = server_ports()
    assert len(set(ports.values())) == len(ports) == 8
    assert ports["filer.port.grpc"] == ports["filer.port"] + FILER_GRPC_OFFSET


def test_copy_tree_uploads_a_folder_with_subfolders_byte_for_byte(s3: SeaweedServer, tmp_path: Path) -> None:
    folder = tmp_path / "n3"
    files = {"img-000000000.jpg": b"\xff\xd8first", "d000001/img-000000001.jpg": b"\xff\xd8second",
             "d000001/img 2 (copy).jpg": b""}
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    client = s3.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="devkit-copy")

    s3.copy_tree(folder, "devkit-copy", "scale/flat/")

    listed = client.list_objects_v2(Bucket="devkit-copy", Prefix="scale/flat/n3/")["Contents"]
    assert sorted(obj["Key"] for obj in listed) == sorted(f"scale/flat/n3/{name}" for name in files)
    for name, body in files.items():
        assert client.get_object(Bucket="devkit-copy", Key=f"scale/flat/n3/{name}")["Body"].read() == body


@pytest.mark.integration  # `python -m devkit.seaweed serve` starts the server in a child process
def test_serve_leaves_a_running_server_and_its_settings_in_a_private_file(tmp_path: Path) -> None:
    """`python -m devkit.seaweed serve` (the local cluster's S3 server): the server outlives the command,
    its client settings are in a 0600 file, and a second start reuses the credentials."""
    import os
    import signal
    import subprocess
    import sys

    import boto3

    env_file, pidfile = tmp_path / "s3.env", tmp_path / "s3.pid"
    command = [sys.executable, "-m", "devkit.seaweed", "serve", "--dir", str(tmp_path / "s3"),
               "--env-file", str(env_file), "--pidfile", str(pidfile)]
    subprocess.run(command, check=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    pid = int(pidfile.read_text())
    try:
        assert env_file.stat().st_mode & 0o777 == 0o600
        settings = dict(line.split("=", 1) for line in env_file.read_text().split())
        assert settings["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        client = boto3.client("s3", endpoint_url=settings["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket="served")
        assert client.list_buckets()["Buckets"][0]["Name"] == "served"
    finally:
        os.killpg(pid, signal.SIGKILL)
    subprocess.run(command, check=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    try:
        again = dict(line.split("=", 1) for line in env_file.read_text().split())
        assert again["AWS_SECRET_ACCESS_KEY"] == settings["AWS_SECRET_ACCESS_KEY"]
    finally:
        os.killpg(int(pidfile.read_text()), signal.SIGKILL)
