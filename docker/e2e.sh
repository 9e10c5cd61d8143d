#!/usr/bin/env bash
# Container end to end (make image-e2e): build docker/Dockerfile on a locally made Debian base, then
# run the job in it the way KubeRay runs it (head, worker and submitter containers, host network)
# against a SeaweedFS S3 server on this host. See docs/container.md.
#
# Phases (each one timed):
#   tools     apt-get install docker.io / debootstrap when missing
#   dockerd   use a running Docker engine (DOCKER_HOST or the default socket), else start our own
#   base      debootstrap a Debian bookworm minbase (mirror from this machine's apt sources), docker import
#   wheels    pip download the pinned wheels into .cache/wheelhouse (reused by later runs)
#   build     docker/build.sh --offline --base-image <that base>
#   prune     our own dockerd only: the images the build left untagged, and the build cache beyond
#             E2E_BUILD_CACHE_KEEP (default 10GB; each rebuild adds ~7 GB that a later one never reuses)
#   run       tests/container/test_image_e2e.py: render the chart, run head/worker/submitter, check
# Everything started here (containers, dockerd and its containerd, the S3 server) is stopped on exit,
# success or failure. Env knobs: E2E_IMAGE (tag), E2E_KEEP_IMAGE=0 (remove the image afterwards; only with our own dockerd),
# E2E_DOCKER_ROOT (data root of our own dockerd; default .cache/docker, reused so reruns are warm).
# `docker/e2e.sh --save FILE` stops after the build and writes the image with `docker save` to FILE,
# which may be a named pipe (the local cluster, k8s/local/cluster.sh, streams it into its containerd).
set -euo pipefail

SAVE_TO=""
case "${1:-}" in
    --save) [ -n "${2:-}" ] || { echo "e2e.sh: --save needs a file name" >&2; exit 2; }; SAVE_TO="$2" ;;
    "") ;;
    *) echo "e2e.sh: unknown option $1 (only --save FILE)" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
IMAGE="${E2E_IMAGE:-batchinfer:e2e}"
BASE_IMAGE="batchinfer-e2e-base:bookworm"
DOCKER_ROOT="${E2E_DOCKER_ROOT:-$ROOT/.cache/docker}"
RUN_DIR="$(mktemp -d /tmp/batchinfer-e2e.XXXXXX)"   # short path: unix sockets live here
RUN_ID="${RUN_DIR##*.}"                                # labels this run's containers
export BATCHINFER_E2E_RUN_ID="$RUN_ID" BATCHINFER_E2E_STATE="$RUN_DIR"
OWN_DOCKERD_PID=""
T0=$SECONDS
PHASES=()

log() { echo "[e2e $(date +%H:%M:%S)] $*"; }
CURRENT_PHASE=""
PHASE_START=0
phase() {  # phase NAME COMMAND...: run it, record its duration (cleanup records a failed one)
    CURRENT_PHASE="$1" PHASE_START=$SECONDS; shift
    log "=== $CURRENT_PHASE"
    "$@"
    PHASES+=("$(printf '%-8s %4ds' "$CURRENT_PHASE" $((SECONDS - PHASE_START)))")
    log "=== $CURRENT_PHASE done in $((SECONDS - PHASE_START)) s"
    CURRENT_PHASE=""
}

cleanup() {
    local rc=$?
    set +e
    # The test stops what it starts; this is the safety net if it died: its S3 server (a process
    # group of its own, PID recorded by the test) and this run's containers (by label).
    wpid="$(cat "$RUN_DIR/weed.pid" 2>/dev/null)"
    [ -n "$wpid" ] && kill -0 "$wpid" 2>/dev/null && { log "stopping the S3 server (pid $wpid)"; kill -KILL -- "-$wpid"; }
    if docker info >/dev/null 2>&1; then
        ids="$(docker ps -aq --filter "label=batchinfer-e2e=$RUN_ID")"
        [ -n "$ids" ] && { log "removing containers $ids"; docker rm -f $ids >/dev/null 2>&1; }
    fi
    if [ -n "$OWN_DOCKERD_PID" ]; then
        [ "${E2E_KEEP_IMAGE:-1}" = 0 ] && docker image rm -f "$IMAGE" >/dev/null 2>&1
        log "stopping dockerd (pid $OWN_DOCKERD_PID)"
        kill -TERM "$OWN_DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$OWN_DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$OWN_DOCKERD_PID" 2>/dev/null; then
            log "dockerd did not stop; SIGKILL"; kill -KILL "$OWN_DOCKERD_PID" 2>/dev/null
        fi
        # dockerd stops the containerd it started; kill it by its pidfile if it is still there.
        cpid="$(cat "$RUN_DIR/exec/containerd/containerd.pid" 2>/dev/null)"
        [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null && kill -TERM "$cpid"
        # dockerd leaves mounts under its exec root (netns/default): unmount them before rm -rf.
        findmnt -rn -o TARGET | grep "^$RUN_DIR/" | sort -r | while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done
    fi
    rm -rf "$RUN_DIR"
    echo
    [ -n "$CURRENT_PHASE" ] && PHASES+=("$(printf '%-8s %4ds  FAILED' "$CURRENT_PHASE" $((SECONDS - PHASE_START)))")
    log "phase timings:"; for p in "${PHASES[@]}"; do echo "    $p"; done
    log "total $((SECONDS - T0)) s; exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || { echo "need root to apt-get install ${missing[*]}" >&2; return 1; }
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${missing[@]}" >"$RUN_DIR/apt.log" 2>&1 \
            || { apt-get update -q >"$RUN_DIR/apt.log" 2>&1 \
                 && apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$RUN_DIR/apt.log" 2>&1; } \
            || { cat "$RUN_DIR/apt.log" >&2; return 1; }
    fi
}

ensure_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "using the running Docker engine (${DOCKER_HOST:-default socket})"; return
    fi
    mkdir -p "$DOCKER_ROOT" "$RUN_DIR/exec"
    export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
    log "starting dockerd (data root $DOCKER_ROOT, socket $RUN_DIR/docker.sock)"
    # No bridge/iptables here: every build and container uses the host network.
    dockerd --data-root "$DOCKER_ROOT" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
        -H "$DOCKER_HOST" --iptables=false --ip-masq=false --bridge=none \
        >"$RUN_DIR/dockerd.log" 2>&1 &
    OWN_DOCKERD_PID=$!
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$OWN_DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    tail -30 "$RUN_DIR/dockerd.log" >&2; echo "dockerd did not come up" >&2; return 1
}

apt_mirror() {
    # The Debian mirror this machine's apt uses for bookworm (sources.list or deb822 .sources).
    local m
    m="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk '$2 == "bookworm" {print $1; exit}')"
    if [ -z "$m" ]; then
        m="$(grep -hE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
             | awk '$3 == "bookworm" {print $2; exit}')"
    fi
    if [ -z "$m" ]; then
        m="$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)"
    fi
    [ -n "$m" ] || { echo "no bookworm mirror found in this machine's apt sources" >&2; return 1; }
    echo "$m"
}

ensure_base() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "base image $BASE_IMAGE exists"; return; fi
    local mirror rootfs="$RUN_DIR/rootfs"
    mirror="$(apt_mirror)"
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$RUN_DIR/debootstrap.log" 2>&1 \
        || { tail -30 "$RUN_DIR/debootstrap.log" >&2; return 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

fill_wheels() {
    # A warm wheelhouse only re-resolves (seconds); a cold one is ~3 GB of CUDA torch wheels.
    HOST_PYTHON="$PY" bash "$ROOT/docker/build.sh" --wheelhouse --fetch-only
    log "wheelhouse: $(find "$ROOT/.cache/wheelhouse" -name '*.whl' | wc -l) wheels, $(du -sh "$ROOT/.cache/wheelhouse" | cut -f1)"
}

build_image() {
    HOST_PYTHON="$PY" bash "$ROOT/docker/build.sh" --tag "$IMAGE" --base-image "$BASE_IMAGE" --offline \
        -- --network host >"$RUN_DIR/build.log" 2>&1 || { tail -60 "$RUN_DIR/build.log" >&2; return 1; }
    # Per-step durations from BuildKit's plain progress output.
    awk '/^#[0-9]+ (\[|exporting)/ { id = $1; sub(/^#[0-9]+ /, ""); name[id] = substr($0, 1, 90) }
         /^#[0-9]+ (DONE|CACHED)/ && ($1 in name) { printf "    %-8s %s\n", ($2 == "CACHED" ? "cached" : $3), name[$1]; delete name[$1] }' \
        "$RUN_DIR/build.log"
    tail -1 "$RUN_DIR/build.log"
}

run_containers() {
    BATCHINFER_E2E_IMAGE="$IMAGE" RAY_USAGE_STATS_ENABLED=0 \
        "$PY" -m pytest "$ROOT/tests/container/test_image_e2e.py" -m container -v -p no:cacheprovider
}

phase tools ensure_tools
phase dockerd ensure_dockerd
phase base ensure_base
phase wheels fill_wheels
phase build build_image
prune() {
    docker image prune -f >/dev/null
    docker builder prune -f --keep-storage "${E2E_BUILD_CACHE_KEEP:-10GB}" 2>/dev/null | tail -1
}
if [ -n "$OWN_DOCKERD_PID" ]; then phase prune prune; fi
if [ -n "$SAVE_TO" ]; then
    save_image() { docker save "$IMAGE" > "$SAVE_TO"; }  # a redirection: `-o` would replace a pipe
    phase save save_image
    log "image $IMAGE saved to $SAVE_TO"
    exit 0
fi
phase run run_containers
log "image $IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB (%.0f bytes)", $1/1e9, $1}')"
