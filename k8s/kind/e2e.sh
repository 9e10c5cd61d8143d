#!/usr/bin/env bash
# End to end on kind, as a user would do it:
#   cluster + KubeRay (up.sh) -> CPU image built and loaded -> in-cluster S3 (SeaweedFS) ->
#   sample photos + weights uploaded -> helm install with the CPU values -> RayJob SUCCEEDED ->
#   Parquet rows read back and printed.
# Needs: docker, kind v0.33.0, kubectl, helm (4, or >= 3.18.4; or HELM=/path), openssl, make, the project
# venv (make venv) and network access to pull kindest/node, quay.io/kuberay/operator and
# chrislusf/seaweedfs. Checked before anything starts. Run via `make kind-e2e`.
# KEEP_CLUSTER=1 keeps the cluster afterwards (make kind-down deletes it).
set -euo pipefail
# shellcheck source=k8s/kind/require.sh
source "${BASH_SOURCE[0]%/*}/require.sh"
HELM="${HELM:-helm}"
require_tools docker kind kubectl "$HELM" openssl make
cd "${BASH_SOURCE[0]%/*}/../.."
ROOT="$PWD"   # the repository root: s3seed.py imports devkit from it
CLUSTER="${KIND_CLUSTER_NAME:-batchinfer}"
NS="${NAMESPACE:-batchinfer}"
RELEASE="${RELEASE:-batchinfer}"
IMAGE="${IMAGE_CPU:-batchinfer:0.1.0-cpu}"
PY="${PYTHON:-.venv/bin/python}"
LOCAL_PORT="${S3_LOCAL_PORT:-18333}"

PF_PID=""
RAYJOB=""   # known from step 6 on
cleanup() {
  local rc=$?
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "---- e2e failed (rc=$rc): diagnostics ----" >&2
    # The RayJob and its RayCluster (KubeRay copies the RayJob's labels onto it) by the release label,
    # whenever the failure happened; the submitter Job is named after the RayJob; the helm test Pod
    # and the Ray pods carry the release label too.
    local rayjobs
    rayjobs="$(kubectl -n "$NS" get rayjob -l app.kubernetes.io/instance="$RELEASE" -o jsonpath='{.items[*].metadata.name}' 2>/dev/null || true)"
    kubectl -n "$NS" get rayjob,raycluster,jobs,pods -o wide >&2 || true
    kubectl -n "$NS" describe rayjob,raycluster -l app.kubernetes.io/instance="$RELEASE" >&2 || true
    kubectl -n "$NS" describe pods -l app.kubernetes.io/instance="$RELEASE" >&2 || true
    kubectl -n "$NS" logs -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/component=storage-check --tail=50 >&2 || true
    for job in ${rayjobs:-$RAYJOB}; do kubectl -n "$NS" logs "job/$job" --tail=200 >&2 || true; done
  fi
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then bash k8s/kind/down.sh || true; fi
  exit "$rc"
}
trap cleanup EXIT

# 1. cluster + KubeRay
bash k8s/kind/up.sh

# 2. the CPU image (docker/build.sh via make), loaded into the kind nodes
make image-cpu IMAGE_CPU="$IMAGE"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# 3. in-cluster S3 server with random credentials, and the job's credentials Secret
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
ACCESS_KEY="kind$(openssl rand -hex 6)"
SECRET_KEY="$(openssl rand -hex 20)"
cat > /tmp/batchinfer-kind-s3.json <<JSON
{"identities": [{"name": "batchinfer", "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
kubectl -n "$NS" create secret generic seaweedfs-s3-config --from-file=s3.json=/tmp/batchinfer-kind-s3.json \
  --dry-run=client -o yaml | kubectl apply -f -
rm -f /tmp/batchinfer-kind-s3.json
kubectl -n "$NS" create secret generic batchinfer-s3 \
  --from-literal=AWS_ACCESS_KEY_ID="$ACCESS_KEY" --from-literal=AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -k k8s/kind
kubectl -n "$NS" rollout status deploy/seaweedfs --timeout=300s

# 4. bucket, sample photos and model weights, through a port-forward
kubectl -n "$NS" port-forward svc/seaweedfs "$LOCAL_PORT:8333" >/dev/null 2>&1 &
PF_PID=$!
export AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION=us-east-1
for _ in $(seq 60); do
  (echo > "/dev/tcp/127.0.0.1/$LOCAL_PORT") 2>/dev/null && break
  sleep 1
done
PYTHONPATH="$ROOT" "$PY" k8s/kind/s3seed.py seed --endpoint "http://127.0.0.1:$LOCAL_PORT"

# 5. the chart, with the CPU values
"$HELM" upgrade --install "$RELEASE" helm/batchinfer -n "$NS" -f k8s/kind/values-cpu.yaml --wait=false
# the chart's own storage check (the job's image, ServiceAccount and credentials Secret)
"$HELM" test "$RELEASE" -n "$NS" --logs --timeout 10m
# 6. wait for the RayJob (named <release>-<runId>): SUCCEEDED, or stop early on a terminal failure
RAYJOB="$(kubectl -n "$NS" get rayjob -l app.kubernetes.io/instance="$RELEASE" -o jsonpath='{.items[0].metadata.name}')"
deadline=$((SECONDS + ${E2E_TIMEOUT_S:-1800}))
while :; do
  deploy="$(kubectl -n "$NS" get rayjob "$RAYJOB" -o jsonpath='{.status.jobDeploymentStatus}' 2>/dev/null || true)"
  status="$(kubectl -n "$NS" get rayjob "$RAYJOB" -o jsonpath='{.status.jobStatus}' 2>/dev/null || true)"
  echo "$(date +%T) RayJob $RAYJOB: deployment=${deploy:-New} job=${status:-}"
  if [ "$status" = "SUCCEEDED" ]; then break; fi
  case "$deploy" in
    Failed|ValidationFailed) echo "RayJob failed" >&2; exit 1 ;;
    Complete) [ "$status" = "SUCCEEDED" ] || { echo "RayJob completed with $status" >&2; exit 1; } ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for the RayJob" >&2; exit 1; fi
  sleep 10
done
kubectl -n "$NS" logs "job/$RAYJOB" --tail=60 || true

# 7. read the Parquet rows back
PYTHONPATH="$ROOT" "$PY" k8s/kind/s3seed.py show --endpoint "http://127.0.0.1:$LOCAL_PORT"
echo "kind e2e: OK"
