#!/usr/bin/env bash
# Create the kind cluster and install KubeRay v1.7.0 (operator + CRDs) into it.
# Needs: docker, kind v0.33.0 (node image kindest/node:v1.37.0, pinned in kind-config.yaml; other kind
# releases may work but are warned about), kubectl (>= 1.27), network access to Docker Hub and quay.io.
set -euo pipefail
# shellcheck source=k8s/kind/require.sh
source "${BASH_SOURCE[0]%/*}/require.sh"
require_tools docker kind kubectl
cd "${BASH_SOURCE[0]%/*}/../.."
CLUSTER="${KIND_CLUSTER_NAME:-batchinfer}"

found="$(kind version 2>/dev/null | awk '{print $2}' || true)"
if [ "$found" != "$KIND_VERSION" ]; then
  echo "up.sh: warning: kind ${found:-(unknown version)} found; this path is tested with kind $KIND_VERSION and $KIND_NODE_IMAGE" >&2
fi

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
