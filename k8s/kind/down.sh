#!/usr/bin/env bash
# Delete the kind cluster (and everything in it).
set -euo pipefail
# shellcheck source=k8s/kind/require.sh
source "${BASH_SOURCE[0]%/*}/require.sh"
require_tools kind
CLUSTER="${KIND_CLUSTER_NAME:-batchinfer}"
kind delete cluster --name "$CLUSTER"
