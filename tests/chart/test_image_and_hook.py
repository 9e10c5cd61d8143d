"""The image reference is required (no public image exists), and the `helm test` hook checks storage
access with the job's own identity: rendered, validated, and run for real against SeaweedFS."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.support import BIN

from .conftest import VALUES_DIR, VALUES_FILES, VALUES_IDS
from .render import (CHART_DIR, PLAIN_MANIFEST_IMAGE, RAYJOB_MANIFEST, REPO_ROOT, HelmError, documents, helm,
                     rayjob_of, template)
from .schemas import pod_templates

K8S = REPO_ROOT / "k8s"


# ---- image.repository is required ---------------------------------------------------------------

@pytest.mark.parametrize("sets,make", [([], "make image IMAGE=<registry>/batchinfer:0.1.0"),
                                       (["cpuFallback.enabled=true"], "make image-cpu IMAGE_CPU=<registry>/batchinfer:0.1.0-cpu")],
                         ids=["gpu", "cpu"])
def test_default_render_without_image_fails_with_build_and_push(helm_bin, sets, make):
    with pytest.raises(HelmError) as excinfo:
        template(set_values=sets, helm_bin=helm_bin)
    message = excinfo.value.stderr
    assert "image.repository is not set" in message
    assert make in message and "docker push <registry>/batchinfer:" in message
    assert "--set image.repository=<registry>/batchinfer" in message
    # helm install fails the same way, before anything reaches a cluster.
    proc = helm("install", "x", str(CHART_DIR), "--dry-run=client", *[a for s in sets for a in ("--set", s)],
                helm_bin=helm_bin, check=False)
    assert proc.returncode != 0 and "image.repository is not set" in proc.stderr


def _documented_values() -> dict[str, dict]:
    """Every values file the project documents or ships: the test matrix, kind, Argo CD, Flux."""
    found = {f"tests/chart/values/{p.name}": yaml.safe_load(p.read_text()) for p in VALUES_FILES}
    found["k8s/kind/values-cpu.yaml"] = yaml.safe_load((K8S / "kind/values-cpu.yaml").read_text())
    app = yaml.safe_load((K8S / "gitops/argocd-application.yaml").read_text())
    found["k8s/gitops/argocd-application.yaml"] = app["spec"]["source"]["helm"]["valuesObject"]
    flux = next(d for d in documents((K8S / "gitops/flux-helmrelease.yaml").read_text()) if d["kind"] == "HelmRelease")
    found["k8s/gitops/flux-helmrelease.yaml"] = flux["spec"]["values"]
    return found


@pytest.mark.parametrize("name,values", list(_documented_values().items()), ids=list(_documented_values()))
def test_every_documented_values_file_sets_the_image(name, values):
    assert values.get("image", {}).get("repository"), f"{name} must set image.repository"


def test_plain_manifest_carries_an_obvious_placeholder_image():
    text = RAYJOB_MANIFEST.read_text()
    images = {tpl["spec"]["containers"][0]["image"] for _, tpl in pod_templates(rayjob_of(documents(text)))}
    assert images == {f"{PLAIN_MANIFEST_IMAGE}:0.1.0"}
    assert PLAIN_MANIFEST_IMAGE.split("/")[0].endswith(".example")  # RFC 2606: can never resolve
    header = text.split("\napiVersion", 1)[0]
    assert PLAIN_MANIFEST_IMAGE in header and "make image" in header
    assert "Pod" not in [d["kind"] for d in documents(text)], "no helm test hook in the plain manifest"


# ---- the helm test hook --------------------------------------------------------------------------

def _hook(docs: list[dict]) -> dict:
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    return pod


def _storage_env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", []) if e["name"].startswith("AWS_")}


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_hook_uses_the_jobs_image_identity_and_storage_settings(render, values_file):
    docs = render(values_file)
    pod = _hook(docs)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    rayjob = rayjob_of(docs)
    templates = dict(pod_templates(rayjob))
    worker = next(tpl for name, tpl in templates.items() if name.startswith("worker:"))
    ray_container = worker["spec"]["containers"][0]
    (check,) = pod["spec"]["containers"]
    # The same image, the driver's ServiceAccount (the head's: `ray job submit` runs the driver there; its
    # own one under autoscaling, for IRSA / Workload Identity) and S3 env (endpoint, region, Secret refs).
    assert check["image"] == ray_container["image"]
    assert pod["spec"]["serviceAccountName"] == templates["head"]["spec"]["serviceAccountName"]
    assert _storage_env(check) == _storage_env(ray_container) and _storage_env(check)
    assert pod["spec"]["securityContext"] == worker["spec"]["securityContext"]
    assert check["securityContext"] == ray_container["securityContext"]
    # It runs the job image's own command on the job's input and output.
    argv = check["command"]
    entry = __import__("shlex").split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["batchinfer", "check"]
    assert argv[argv.index("--input") + 1] == entry[entry.index("--input") + 1]
    assert argv[argv.index("--output") + 1] == entry[entry.index("--output") + 1]  # the run's own prefix


def test_hook_opt_out(render):
    assert not [d for d in render(None, "helmTest.enabled=false") if d["kind"] == "Pod"]


def _run_hook(pod: dict, secrets: dict[str, dict[str, str]], extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the hook's command as the kubelet would: its env (secretKeyRef resolved), its argv."""
    (container,) = pod["spec"]["containers"]
    env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/tmp")}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return subprocess.run(container["command"], env={**env, **extra_env}, capture_output=True, text=True,
                          timeout=300)


def test_hook_check_against_seaweedfs(helm_bin, s3, samples):
    """The rendered hook, run for real: succeeds with the job's settings, fails with one line (exit 2)
    on a wrong bucket and on a wrong secret, and leaves nothing behind under the output prefix."""
    values = VALUES_DIR / "local-ray.yaml"
    secrets = {"batchinfer-s3": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}}

    def hook(*sets: str) -> dict:
        return _hook(documents(template([values], [f"s3.endpoint={s3.endpoint}", *sets], helm_bin=helm_bin)))

    ok = _run_hook(hook(), secrets, {})
    assert ok.returncode == 0, ok.stderr[-3000:]
    # one page read, one image read: the check never lists a whole (possibly 100 M-object) input
    assert ok.stdout.startswith(f"batchinfer check: ok: images under {samples['images']} (read {samples['images']}")
    client = s3.client()
    left = client.list_objects_v2(Bucket="samples", Prefix="chart-to-job/").get("Contents", [])
    assert not [o["Key"] for o in left if "_batchinfer-check-" in o["Key"]], "the probe object was not deleted"
    # The job's lease store was set up as the run will (boto3, If-None-Match / If-Match puts, a delete)
    # under the run's own meta prefix, and its probe is gone.
    assert ".batchinfer/ honours conditional writes" in ok.stdout
    assert not [o["Key"] for o in left if ".probe-" in o["Key"]], "the lease probe was not deleted"

    wrong_bucket = _run_hook(hook("job.output=s3://no-such-bucket-batchinfer/out/"), secrets, {})
    assert wrong_bucket.returncode == 2
    (line,) = wrong_bucket.stderr.strip().splitlines()
    assert "'no-such-bucket-batchinfer' does not exist" in line and "fix the URI" in line

    bad = {"batchinfer-s3": {**secrets["batchinfer-s3"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}}
    denied = _run_hook(hook(), bad, {})
    assert denied.returncode == 2
    (line,) = denied.stderr.strip().splitlines()
    assert "AWS_SECRET_ACCESS_KEY" in line and "not-the-secret" not in line
