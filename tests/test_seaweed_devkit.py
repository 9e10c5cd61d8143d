"""The local S3 server's bulk upload (devkit.seaweed copy_tree), as the scale benchmark fills a bucket."""

from __future__ import annotations

import contextlib
from pathlib import Path

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
