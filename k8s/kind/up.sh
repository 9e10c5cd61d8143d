#!/usr/bin/env bash
# Create the kind cluster and install KubeRay v1.7.0 (operator + CRDs) into it.
# Needs: docker, kind (>= 0.24), kubectl (>= 1.27), network access to github.com and quay.io.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${KIND_CLUSTER_NAME:-batchinfer}"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "up.sh: '$tool' is not on PATH" >&2; exit 2; }
done

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind cluster '$CLUSTER' already exists"
else
  kind create cluster --name "$CLUSTER" --config k8s/kind/kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

# KubeRay CRDs are too large for client-side apply: server-side.
kubectl apply --server-side --force-conflicts -k k8s/kuberay
kubectl -n kuberay-system rollout status deploy/kuberay-operator --timeout=300s
kubectl wait --for=condition=Established crd/rayjobs.ray.io crd/rayclusters.ray.io --timeout=60s
echo "kind cluster '$CLUSTER' is up with KubeRay v1.7.0"
