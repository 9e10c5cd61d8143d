"""k8s/local/oci_image.py: the one-binary images the local cluster imports (pause, KubeRay operator)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import runpy
import tarfile
from pathlib import Path

OCI_IMAGE = Path(__file__).resolve().parents[2] / "k8s" / "local" / "oci_image.py"


def test_archive_is_an_oci_layout_whose_digests_match_and_whose_layer_holds_the_binary() -> None:
    image_archive = runpy.run_path(str(OCI_IMAGE))["image_archive"]
    archive = tarfile.open(fileobj=io.BytesIO(image_archive("quay.io/kuberay/operator:v1.6.0", "/manager",
                                                            b"\x7fELF binary", 65532)))
    files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "quay.io/kuberay/operator:v1.6.0"
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'][7:]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"] == {"Entrypoint": ["/manager"], "User": "65532:65532"}
    layer_blob = files[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"]
    layer_tar = gzip.decompress(layer_blob)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]
    layer = tarfile.open(fileobj=io.BytesIO(layer_tar))
    (member,) = layer.getmembers()
    assert (member.name, member.mode, layer.extractfile(member).read()) == ("manager", 0o755, b"\x7fELF binary")
