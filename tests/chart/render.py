"""Render the batchinfer chart with a real helm binary, and (re)generate k8s/rayjob.yaml.

    python -m tests.chart.render            # rewrite k8s/rayjob.yaml from the chart's defaults
    python -m tests.chart.render --check    # exit 1 if k8s/rayjob.yaml is out of date

k8s/rayjob.yaml is `helm template batchinfer helm/batchinfer --skip-tests --set job.runId=run-0001
--set image.repository=your-registry.example/batchinfer` (release "batchinfer", no namespace, default
values plus the one required value as an obvious placeholder, a run id that is easy to replace) without
Helm's ownership metadata (helm.sh/chart, app.kubernetes.io/managed-by, meta.helm.sh/*: with them a later
`helm install` over the same objects fails), behind a comment header; tests/chart keeps the two equal.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

import yaml

try:
    from .tools import REPO_ROOT, ensure_tool
except ImportError:  # run as a script: python tests/chart/render.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tools import REPO_ROOT, ensure_tool  # type: ignore[no-redef]

CHART_DIR = REPO_ROOT / "helm" / "batchinfer"
RAYJOB_MANIFEST = REPO_ROOT / "k8s" / "rayjob.yaml"
DEFAULT_RELEASE = "batchinfer"
PLAIN_RUN_ID = "run-0001"
HELM_OWNERSHIP_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_OWNERSHIP_ANNOTATION_PREFIX = "meta.helm.sh/"
# The chart requires image.repository (no public image exists); the plain manifest carries a placeholder.
PLAIN_MANIFEST_IMAGE = "your-registry.example/batchinfer"
PLAIN_MANIFEST_ARGS = ["--skip-tests"]  # the `helm test` Pod is for `helm test`, not for kubectl apply
HEADER = f"""\
# GENERATED FILE: the batchinfer Helm chart's default render (do not edit by hand).
#   Regenerate: python -m tests.chart.render
#   Same as:    helm template batchinfer helm/batchinfer --skip-tests --set job.runId={PLAIN_RUN_ID} \\
#                 --set image.repository={PLAIN_MANIFEST_IMAGE}
#               without Helm's ownership labels (helm.sh/chart, app.kubernetes.io/managed-by).
# A NetworkPolicy, a PodDisruptionBudget, a ServiceAccount and the RayJob `batchinfer-{PLAIN_RUN_ID}`, writing
# to <output>/{PLAIN_RUN_ID}/.
# Edit a copy first: every image: {PLAIN_MANIFEST_IMAGE} -> the image you built and pushed (make image;
# README.md), the entrypoint's --input/--output, and the S3 env. Or better: use the chart (docs/kubernetes.md).
#   First run:  kubectl apply -n <namespace> -f k8s/rayjob.yaml
#   Next runs:  sed 's/{PLAIN_RUN_ID}/run-0002/g' k8s/rayjob.yaml | kubectl apply -n <namespace> -f -
#   Re-run a failed run-0001 (same output, --resume):  kubectl replace --force -n <namespace> -f k8s/rayjob.yaml
# (a finished RayJob never runs again: a new run is a new RayJob name, and a new output prefix).
"""


class HelmError(RuntimeError):
    """helm exited non-zero; .stderr holds its message."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str):
        super().__init__(f"helm {' '.join(args)} failed ({returncode}):\n{stderr}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def helm(*args: str, helm_bin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    exe = helm_bin or ensure_tool("helm")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, cwd=REPO_ROOT)
    if check and proc.returncode != 0:
        raise HelmError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def template_args(values_files: Iterable[Path | str] = (), set_values: Iterable[str] = (),
                  release: str = DEFAULT_RELEASE, extra: Iterable[str] = ()) -> list[str]:
    args = ["template", release, str(CHART_DIR)]
    for f in values_files:
        args += ["--values", str(f)]
    for s in set_values:  # "json:key=<json>" means --set-json
        args += ["--set-json", s[5:]] if s.startswith("json:") else ["--set", s]
    return args + list(extra)


def template(values_files: Iterable[Path | str] = (), set_values: Iterable[str] = (),
             release: str = DEFAULT_RELEASE, helm_bin: str | None = None, extra: Iterable[str] = ()) -> str:
    """`helm template` output as text."""
    return helm(*template_args(values_files, set_values, release, extra), helm_bin=helm_bin).stdout


def documents(text: str) -> list[dict]:
    """The non-empty YAML documents of a render."""
    return [d for d in yaml.safe_load_all(text) if d]


def rayjob_of(docs: list[dict]) -> dict:
    found = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(found) == 1, f"expected one RayJob, got {len(found)}"
    return found[0]


def without_helm_ownership(node):
    """A copy of rendered objects without Helm's ownership labels and annotations, at every level
    (objects and the pod templates inside them)."""
    if isinstance(node, list):
        return [without_helm_ownership(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: without_helm_ownership(value) for key, value in node.items()}
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        labels = {k: v for k, v in metadata.get("labels", {}).items() if k not in HELM_OWNERSHIP_LABELS}
        annotations = {k: v for k, v in metadata.get("annotations", {}).items()
                       if not k.startswith(HELM_OWNERSHIP_ANNOTATION_PREFIX)}
        for key, value in (("labels", labels), ("annotations", annotations)):
            if value:
                metadata[key] = value
            else:
                metadata.pop(key, None)
    return out


def plain_manifest_documents(run_id: str = PLAIN_RUN_ID, helm_bin: str | None = None) -> list[dict]:
    """The objects of the plain manifest for one run id."""
    return without_helm_ownership(documents(template(
        set_values=[f"job.runId={run_id}", f"image.repository={PLAIN_MANIFEST_IMAGE}"], helm_bin=helm_bin,
        extra=PLAIN_MANIFEST_ARGS)))


def default_manifest(helm_bin: str | None = None) -> str:
    """The text k8s/rayjob.yaml must have."""
    docs = plain_manifest_documents(helm_bin=helm_bin)
    return HEADER + "---\n" + yaml.safe_dump_all(docs, sort_keys=False, width=10_000)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want = default_manifest()
    if "--check" in argv:
        have = RAYJOB_MANIFEST.read_text() if RAYJOB_MANIFEST.exists() else ""
        # Compare the parsed objects, so that helm 3 and helm 4 formatting agree.
        if documents(have) != documents(want):
            print(f"{RAYJOB_MANIFEST.relative_to(REPO_ROOT)} is out of date: run python -m tests.chart.render",
                  file=sys.stderr)
            return 1
        print(f"{RAYJOB_MANIFEST.relative_to(REPO_ROOT)} is up to date")
        return 0
    RAYJOB_MANIFEST.write_text(want)
    print(f"wrote {RAYJOB_MANIFEST.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
