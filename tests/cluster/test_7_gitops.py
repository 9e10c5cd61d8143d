"""2g: the GitOps files of k8s/gitops, as far as they run here without a GitOps controller.

Neither Argo CD nor Flux (nor their CRDs) can be installed on this machine. Each controller's one step
is done the way it does it: Argo CD renders the Application's chart with its `valuesObject` and
`parameters` and applies the result server-side, pruning what left the render; Flux's helm-controller
runs `helm upgrade --install` with the HelmRelease's `values` and the run id from its `valuesFrom`
ConfigMap. Everything around that step is the files and their documented commands: the ConfigMap is
applied from the file, the nightly re-run command is run as written (Flux), and Argo CD's health check
(rayjob-health.lua) is evaluated on the live RayJob. The local parts: the one-machine values under the
files' values, the imported image, the seeded bucket, this cluster's S3 endpoint.
"""

from __future__ import annotations

import json
import re

import yaml

from tests.chart.tools import ensure_lupa
from tests.cluster.conftest import NAMESPACE, ROOT, Cluster

GITOPS = ROOT / "k8s" / "gitops"
LOCAL = {"image": {"repository": "batchinfer", "tag": "0.1.0", "pullPolicy": "Never"},
         "job": {"input": "s3://batchinfer/images/", "output": "s3://batchinfer/nightly/"}}
# The Application turns autoscaling on: its sidecar (250m) needs the head to give up as much on 2 CPUs.
# Its worker group (`gpu`, on the CPU here) is the run's one worker: the kind values' `cpu` group goes.
# (The HelmRelease names no group: its run's worker is the kind values' `cpu` group.)
ARGOCD_LOCAL = {"head": {"cpu": "500m"}, "workerGroups": {"cpu": None}}


def _yaml_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((GITOPS / name).read_text()) if d]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _values_file(cluster: Cluster, tmp_path, name: str, values: dict, extra: dict | None = None) -> str:
    local = {**values, "s3": {**values.get("s3", {}), "endpoint": cluster.env["BATCHINFER_S3_ENDPOINT"]}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(_merge(_merge(local, LOCAL), extra or {})))
    return str(path)


def _health(cluster: Cluster, rayjob: str) -> dict:
    lua = ensure_lupa().LuaRuntime(unpack_returned_tuples=True)
    obj = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob {rayjob}")
    check = lua.execute("return function(obj)\n" + (GITOPS / "rayjob-health.lua").read_text() + "\nend")
    result = check(lua.table_from(json.loads(json.dumps(obj)), recursive=True))
    return {"status": result["status"], "message": result["message"]}


def test_flux_helmrelease_runs_and_the_nightly_rerun_starts_a_new_run(cluster: Cluster, seeded, tmp_path) -> None:
    docs = _yaml_docs("flux-helmrelease.yaml")
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    cluster.sh("kubectl apply -f -", input=yaml.safe_dump(configmap))
    values = _values_file(cluster, tmp_path, "flux.yaml", release["spec"]["values"])
    name = release["spec"]["releaseName"]
    source = release["spec"]["valuesFrom"][0]

    def reconcile() -> str:  # helm-controller's step: the values, then each valuesFrom key at its targetPath
        data = cluster.kubectl_json(f"-n {NAMESPACE} get configmap {source['name']}")["data"]
        sets = " ".join(f"--set {ref['targetPath']}={data[ref['valuesKey']]}" for ref in release["spec"]["valuesFrom"])
        cluster.sh(f"helm upgrade --install {name} helm/batchinfer -n {NAMESPACE} -f k8s/kind/values-cpu.yaml "
                   f"-f k8s/local/values.yaml -f {values} {sets}")
        return data[source["valuesKey"]]

    first = reconcile()
    cluster.wait_started(f"{name}-{first}")
    # The documented nightly step (the file's header), as written, with the next night's id.
    header = (GITOPS / "flux-helmrelease.yaml").read_text()
    nightly, rerun = re.findall(r"#   (kubectl -n batch patch configmap .*)\n", header)
    cluster.sh(nightly.replace("$(date -u +%Y%m%d)", "20261207"))
    second = reconcile()
    assert second == "20261207" != first
    job = cluster.wait_started(f"{name}-{second}")
    cluster.wait_gone(f"rayjob {name}-{first}")  # the release's previous run, deleted by the upgrade
    assert [j["metadata"]["name"] for j in cluster.rayjobs(f"app.kubernetes.io/instance={name}")] == [f"{name}-{second}"]
    reconcile()  # an unchanged id changes nothing
    assert [j["metadata"]["uid"] for j in cluster.rayjobs(f"app.kubernetes.io/instance={name}")] == [job["metadata"]["uid"]]
    # The documented re-run (the file's header), as written: a new RayJob for the same run id.
    cluster.sh(rerun.replace("$(date -u +%s)", "1765432100"))
    reconcile()
    again = cluster.wait_started(f"{name}-{second}-1765432100")
    cluster.wait_gone(f"rayjob {name}-{second}")
    assert [j["metadata"]["uid"] for j in cluster.rayjobs(f"app.kubernetes.io/instance={name}")] == [again["metadata"]["uid"]]
    print(f"2g flux: runs {first} then {second} started from the ConfigMap; an unchanged id changed nothing; "
          f"the rerun marker started {name}-{second}-1765432100")
    cluster.sh(f"helm uninstall {name} -n {NAMESPACE} --wait --timeout 3m")
    cluster.sh(f"kubectl -n {NAMESPACE} delete configmap {source['name']}")


def test_argocd_application_runs_prunes_and_reports_health(cluster: Cluster, seeded, tmp_path) -> None:
    app = _yaml_docs("argocd-application.yaml")[0]
    helm_spec = app["spec"]["source"]["helm"]
    values = _values_file(cluster, tmp_path, "argocd.yaml", helm_spec["valuesObject"], ARGOCD_LOCAL)
    name = helm_spec["releaseName"]
    applied: set[str] = set()

    def sync(run_id: str) -> None:  # Argo CD's step: render, apply server-side, prune
        params = " ".join(f"--set-string {p['name']}={run_id if p['name'] == 'job.runId' else p['value']}"
                          for p in helm_spec["parameters"])
        out = cluster.sh(f"helm template {name} helm/batchinfer -n {NAMESPACE} --skip-tests "
                         f"-f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml -f {values} {params} "
                         f"| kubectl apply --server-side -n {NAMESPACE} -f - -o name").stdout.split()
        for gone in applied - set(out):
            cluster.sh(f"kubectl -n {NAMESPACE} delete {gone} --wait=false")
        applied.clear()
        applied.update(out)

    sync(helm_spec["parameters"][0]["value"])
    first = f"{name}-{helm_spec['parameters'][0]['value']}"
    assert _health(cluster, first)["status"] in ("Progressing", "Healthy")
    job = cluster.wait_rayjob(first)
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once(f"nightly/{helm_spec['parameters'][0]['value']}/")
    assert _health(cluster, first)["status"] == "Healthy"
    sync("20261207")  # `argocd app set ... --helm-set-string job.runId=20261207`: a new run, the old one pruned
    cluster.wait_started(f"{name}-20261207")
    cluster.wait_gone(f"rayjob {first}")
    print(f"2g argocd: {first} SUCCEEDED (health Healthy); {name}-20261207 started, {first} pruned")
    for obj in applied:
        cluster.sh(f"kubectl -n {NAMESPACE} delete {obj} --wait=false")
    cluster.wait_gone(f"pods -l app.kubernetes.io/instance={name}")
