"""Write a one-binary OCI image archive to stdout: `python3 oci_image.py REF PATH-IN-IMAGE BINARY UID`.

The local cluster (cluster.sh) makes its sandbox ("pause") and KubeRay operator images this way from
the binaries it built, and imports them with `ctr images import`: nothing is pulled from a registry.
The layout follows the OCI image spec (image-layout, manifest, config); containerd names the image
from the `io.containerd.image.name` annotation.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile


def _tar(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), (modes or {}).get(name, 0o644), 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_archive(ref: str, path_in_image: str, binary: bytes, uid: int) -> bytes:
    layer_tar = _tar({path_in_image.lstrip("/"): binary}, {path_in_image.lstrip("/"): 0o755})
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [path_in_image], "User": f"{uid}:{uid}"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }).encode()
    blobs: dict[str, bytes] = {}

    def add(data: bytes, media_type: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[f"blobs/sha256/{digest[7:]}"] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": add(config, "application/vnd.oci.image.config.v1+json"),
        "layers": [add(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    }).encode()
    descriptor = add(manifest, "application/vnd.oci.image.manifest.v1+json")
    descriptor["annotations"] = {"io.containerd.image.name": ref,
                                 "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [descriptor]}).encode()
    return _tar({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index, **blobs})


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.splitlines()[0])
    ref, path_in_image, binary_path, uid = sys.argv[1:]
    with open(binary_path, "rb") as binary:
        sys.stdout.buffer.write(image_archive(ref, path_in_image, binary.read(), int(uid)))
