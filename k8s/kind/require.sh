# shellcheck shell=bash disable=SC2034  # sourced: the scripts that source it read KIND_*
# Sourced by the kind scripts: `require_tools TOOL...` stops the script, before it changes anything,
# with one line naming the first tool that is not on PATH and how to get it (exit status 2).
# Only bash builtins run here, so it works whatever PATH holds.
KIND_VERSION="v0.33.0"                   # the kind release this path is tested with
KIND_NODE_IMAGE="kindest/node:v1.37.0"   # that release's default node image (kind-config.yaml pins it)

require_tools() {
  local tool hint
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case "$tool" in
      kind) hint="install kind $KIND_VERSION: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
      docker) hint="install Docker and start its daemon: https://docs.docker.com/engine/install/" ;;
      kubectl) hint="install kubectl: https://kubernetes.io/docs/tasks/tools/" ;;
      helm) hint="install helm 4 or >= 3.18.4 (https://helm.sh/docs/intro/install/) or set HELM=/path/to/helm" ;;
      openssl) hint="install openssl (Debian/Ubuntu: apt-get install openssl)" ;;
      make) hint="install make (Debian/Ubuntu: apt-get install make)" ;;
      *) hint="install it" ;;
    esac
    echo "${0##*/}: '$tool' is not on PATH: $hint" >&2
    exit 2
  done
}
