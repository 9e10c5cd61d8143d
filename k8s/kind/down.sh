#!/usr/bin/env bash
# Delete the kind cluster (and everything in it).
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-batchinfer}"
command -v kind >/dev/null || { echo "down.sh: 'kind' is not on PATH" >&2; exit 2; }
kind delete cluster --name "$CLUSTER"
