#!/usr/bin/env bash
# Build the batchinfer image from docker/Dockerfile (make image / make image-cpu / docker/e2e.sh).
#
#   docker/build.sh [--tag T] [--cpu] [--torch-index-url URL] [--base-image IMG]
#                   [--wheelhouse] [--offline] [--fetch-only] [-- extra `docker build` arguments]
#
#   --tag T               image name (default batchinfer:0.1.0)
#   --cpu                 CPU-only torch: torch/torchvision from --torch-index-url
#                         (default https://download.pytorch.org/whl/cpu): a much smaller image for kind
#   --base-image IMG      BASE_IMAGE build arg (default: the Dockerfile's python:3.11-slim-bookworm)
#   --wheelhouse          first `pip download` every pinned wheel on this host into .cache/wheelhouse
#                         (reruns reuse it), which the build bind-mounts instead of downloading
#   --offline             install only from .cache/wheelhouse (implies --wheelhouse unless it is full)
#   --fetch-only          fill the wheelhouse (as --wheelhouse) and stop: no build
#
# The pip CA bundle (PIP_CERT, else `pip config get global.cert`) goes in as a BuildKit secret, never
# as a layer. Needs BuildKit: `docker buildx`, or a docker CLI older than 23 with DOCKER_BUILDKIT=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="batchinfer:0.1.0"
CPU=0
TORCH_INDEX_URL_DEFAULT="https://download.pytorch.org/whl/cpu"
TORCH_INDEX_URL=""
BASE_IMAGE=""
WHEELHOUSE=0
OFFLINE=0
FETCH_ONLY=0
EXTRA=()
WHEEL_DIR="$ROOT/.cache/wheelhouse"
HOST_PYTHON="${HOST_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$HOST_PYTHON" ] || HOST_PYTHON=python3

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --torch-index-url) TORCH_INDEX_URL="$2"; shift 2 ;;
        --base-image) BASE_IMAGE="$2"; shift 2 ;;
        --wheelhouse) WHEELHOUSE=1; shift ;;
        --offline) OFFLINE=1; shift ;;
        --fetch-only) WHEELHOUSE=1; FETCH_ONLY=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$CPU" = 1 ] && [ -z "$TORCH_INDEX_URL" ]; then TORCH_INDEX_URL="$TORCH_INDEX_URL_DEFAULT"; fi
if [ "$CPU" = 1 ] && [ "$OFFLINE" = 1 ]; then
    echo "build.sh: --cpu needs the CPU torch index; it cannot be combined with --offline" >&2; exit 2
fi

# The Dockerfile bind-mounts .cache/wheelhouse; it must exist (empty is fine: pip then uses the index).
mkdir -p "$WHEEL_DIR"

fill_wheelhouse() {
    # Every wheel the image installs, pinned by constraints.txt. Downloaded by this host's pip, so the
    # host must match the image's platform: CPython 3.11 on x86_64 Linux (glibc).
    "$HOST_PYTHON" -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")' || {
        echo "build.sh: --wheelhouse needs a CPython 3.11 x86_64 host python (HOST_PYTHON=...)" >&2; return 1; }
    # Skip when it was filled for exactly these pins (the stamp lies outside the build context).
    local stamp="$ROOT/.cache/wheelhouse.stamp" key
    key="$(cat "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] && ls "$WHEEL_DIR"/torch-*.whl >/dev/null 2>&1; then
        echo "build.sh: $WHEEL_DIR is up to date for constraints.txt + pyproject.toml"; return 0
    fi
    echo "build.sh: filling $WHEEL_DIR (pip download; wheels already there are reused)"
    local log="$ROOT/.cache/wheelhouse.log"
    rm -f "$stamp"
    if ! "$HOST_PYTHON" -m pip download --disable-pip-version-check -q --only-binary=:all: \
            -c "$ROOT/constraints.txt" -d "$WHEEL_DIR" "$ROOT[timm]" "setuptools>=77" wheel >"$log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" >&2; return 1
    fi
    echo "$key" > "$stamp"
}
if [ "$WHEELHOUSE" = 1 ]; then fill_wheelhouse; fi
if [ "$FETCH_ONLY" = 1 ]; then exit 0; fi
if [ "$OFFLINE" = 1 ] && ! ls "$WHEEL_DIR"/torch-*.whl >/dev/null 2>&1; then fill_wheelhouse; fi

# A docker CLI that speaks BuildKit.
BUILD=()
for cli in docker /usr/bin/docker; do
    command -v "$cli" >/dev/null 2>&1 || continue
    if "$cli" buildx version >/dev/null 2>&1; then BUILD=("$cli" buildx build --load); break; fi
    major="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)"
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
        export DOCKER_BUILDKIT=1; BUILD=("$cli" build); break
    fi
done
if [ ${#BUILD[@]} -eq 0 ]; then
    echo "build.sh: no BuildKit-capable docker CLI (install docker-buildx, or Debian's docker.io)" >&2; exit 1
fi

ARGS=(--tag "$TAG" --file "$ROOT/docker/Dockerfile" --progress=plain)
[ -n "$BASE_IMAGE" ] && ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "$TORCH_INDEX_URL" ] && ARGS+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[ "$OFFLINE" = 1 ] && ARGS+=(--build-arg PIP_OFFLINE=1)

CERT="${PIP_CERT:-}"
if [ -z "$CERT" ]; then CERT="$("$HOST_PYTHON" -m pip config get global.cert 2>/dev/null || true)"; fi
if [ -n "$CERT" ] && [ -s "$CERT" ]; then ARGS+=(--secret "id=pip_cert,src=$CERT"); fi

echo "build.sh: ${BUILD[*]} ${ARGS[*]} ${EXTRA[*]} $ROOT"
"${BUILD[@]}" "${ARGS[@]}" "${EXTRA[@]}" "$ROOT"
echo "build.sh: built $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}'))"
