#!/usr/bin/env bash
# A single-node Kubernetes on this machine, made of upstream parts (make cluster-up / cluster-down).
#
#   k8s/local/cluster.sh preflight   check the machine and probe the Go module proxy (no build)
#   k8s/local/cluster.sh build       preflight, then build every binary (cached: seconds when built)
#   k8s/local/cluster.sh up          build, guard the network, start the cluster, load the images,
#                                    install KubeRay from k8s/kuberay, start the S3 server and KWOK
#   k8s/local/cluster.sh down        stop everything `up` started, by process id; remove what it made
#   k8s/local/cluster.sh check       list what is left of a cluster (processes, mounts, links, rules)
#   k8s/local/cluster.sh guard       print the guard's drop counters and each CIDR's route
#   k8s/local/cluster.sh env         print the cluster's connection details (sourceable)
#   k8s/local/cluster.sh image-current  exit 0 when the node already holds this tree's job image
#
# Versions: k8s/local/versions.env. Everything it builds, writes and runs lives under CLUSTER_HOME
# (default .cluster/ in the repo, git-ignored): bin/, pki/, state/, run/, logs/; Go's build and module
# caches stay Go's per-user ones, shared by every clone. Control plane, containerd, kubelet, kube-proxy, CoreDNS, KWOK and SeaweedFS run as host
# processes; the KubeRay operator and the job run as pods. Needs root (a kubelet and a network).
#
# Network: every cluster address sits on the bridge bibr0 (NODE_IP, 10.88.0.1): the API server,
# kubelet, CoreDNS and the S3 server listen there, never on the outward interface. Before anything
# starts, the guard drops every packet to a private range on the outward interface (but the machine's
# own DNS resolver) and sinks the service and fake-node ranges into a veth whose peer has no routes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/k8s/local"
# shellcheck source=versions.env
. "$HERE/versions.env"
CLUSTER_HOME="${CLUSTER_HOME:-$ROOT/.cluster}"
BIN="$CLUSTER_HOME/bin"
PKI="$CLUSTER_HOME/pki"
STATE="$CLUSTER_HOME/state"
RUN="$CLUSTER_HOME/run"
LOGS="$CLUSTER_HOME/logs"
# Go's own per-user caches (GOCACHE, GOMODCACHE) are kept: every clone on this machine shares them,
# so a fresh clone links the binaries in minutes instead of compiling Kubernetes for an hour.
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
export KUBECONFIG="$CLUSTER_HOME/admin.kubeconfig" KUBECACHEDIR="$CLUSTER_HOME/kube-cache"
PATH="$BIN:$PATH"

NODE_NAME=batchinfer-node
BRIDGE=bibr0
NODE_IP=10.88.0.1
SINK_LINK=bisink0
SINK_NETNS=batchinfer-sink
GUARD_CHAIN=BATCHINFER-GUARD
GUARD_HOST_CHAIN=BATCHINFER-GUARD-HOST
APISERVER_PORT=6443
ETCD_PORT=2379
ETCD_PEER_PORT=2380
DNS_SERVICE_NAME=kube-dns
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
KUBERAY_NAMESPACE=kuberay-system
S3_ENV="$CLUSTER_HOME/s3.env"   # AWS_ENDPOINT_URL and credentials (mode 0600)
# Host processes, in start order: down stops them in reverse.
SYSCTLS_TOUCHED="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables fs.inotify.max_user_instances
    fs.inotify.max_user_watches vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns seaweedfs kwok)

log() { echo "[cluster $(date +%H:%M:%S)] $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------- preflight

outward_if() { ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'; }
resolvers() { awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf; }

port_busy() {  # port_busy PORT: true when something listens on it (any address)
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . || ss -Hlun "sport = :$1" 2>/dev/null | grep -q .
}

kuberay_version() {  # the operator release this machine builds: the pin, or the declared fallback
    if [ -f "$CLUSTER_HOME/kuberay.version" ]; then cat "$CLUSTER_HOME/kuberay.version"; else echo "$KUBERAY_VERSION"; fi
}

probe_module() {  # probe_module PATH VERSION: the proxy serves the module's source (zip) at VERSION
    GOFLAGS= go mod download -json "$1@$2" >"$LOGS/probe.json" 2>&1 && ! grep -q '"Error"' "$LOGS/probe.json"
}

preflight() {
    mkdir -p "$LOGS"
    [ "$(id -u)" = 0 ] || die "needs root (it runs a kubelet and sets up a network); run it as root"
    [ "$(uname -s)" = Linux ] || die "needs Linux"
    command -v go >/dev/null || die "needs Go (go1.25 or newer) on PATH: install it from https://go.dev/dl"
    local gov; gov="$(go env GOVERSION | sed 's/^go//')"
    [ "$(printf '%s\n1.25\n' "$gov" | sort -V | head -1)" = 1.25 ] || die "Go $gov is too old: Kubernetes $K8S_VERSION needs go1.25 or newer"
    local m
    for m in /sys/fs/cgroup/memory /sys/fs/cgroup/cpu /sys/fs/cgroup/pids; do
        [ -d "$m" ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup controller at $m: a kubelet cannot run on this machine"
    done
    grep -qw overlay /proc/filesystems || die "the kernel has no overlay filesystem: containerd's overlayfs snapshotter cannot run"
    [ -d /proc/sys/net/bridge ] || die "no br_netfilter (/proc/sys/net/bridge missing): kube-proxy cannot see bridged traffic; load it with 'modprobe br_netfilter'"
    [ -n "$(outward_if)" ] || die "no default route: cannot tell the outward interface to guard"
    # Kernel settings the cluster needs, tried (and put back) before the long build.
    local key
    for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables fs.inotify.max_user_instances; do
        local now; now="$(sysctl -n "$key")" || die "kernel setting $key is missing"
        sysctl -qw "$key=$now" 2>/dev/null || die "kernel setting $key cannot be written here (read-only /proc/sys?): a kubelet and kube-proxy need it"
    done
    # Debian's node runtime packages.
    local missing=() p
    for p in containerd runc iptables conntrack socat; do command -v "$p" >/dev/null || missing+=("$p"); done
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]} (Debian's node runtime; versions.env DEBIAN_PACKAGES)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $DEBIAN_PACKAGES >"$LOGS/apt.log" 2>&1 \
            || { apt-get update -q >>"$LOGS/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $DEBIAN_PACKAGES >>"$LOGS/apt.log" 2>&1; } \
            || die "apt-get install $DEBIAN_PACKAGES failed (see $LOGS/apt.log)"
    fi
    # Every Go module, before anything builds.
    log "probing the Go module proxy ($(go env GOPROXY)) for every module"
    probe_module k8s.io/kubernetes "$K8S_VERSION" || die "the Go module proxy does not serve k8s.io/kubernetes@$K8S_VERSION ($(grep -o '"Error": "[^"]*' "$LOGS/probe.json" | head -1 | cut -c11-)); pick a served release in k8s/local/versions.env (go list -m -versions k8s.io/kubernetes)"
    probe_module k8s.io/client-go "$K8S_STAGING_VERSION" || die "the Go module proxy does not serve k8s.io/client-go@$K8S_STAGING_VERSION: set K8S_STAGING_VERSION to v0.<minor>.<patch> of K8S_VERSION in k8s/local/versions.env"
    probe_module go.etcd.io/etcd/server/v3 "$ETCD_VERSION" || die "the Go module proxy does not serve go.etcd.io/etcd/server/v3@$ETCD_VERSION: pick a served v3.6 release in k8s/local/versions.env"
    probe_module github.com/coredns/coredns "$COREDNS_VERSION" || die "the Go module proxy does not serve github.com/coredns/coredns@$COREDNS_VERSION: pick a served release in k8s/local/versions.env"
    probe_module sigs.k8s.io/kwok "$KWOK_VERSION" || die "the Go module proxy does not serve sigs.k8s.io/kwok@$KWOK_VERSION: pick a served release in k8s/local/versions.env"
    if probe_module github.com/ray-project/kuberay/ray-operator "$KUBERAY_VERSION"; then
        echo "$KUBERAY_VERSION" > "$CLUSTER_HOME/kuberay.version"
    else
        local why; why="$(grep -o '"Error": "[^"]*' "$LOGS/probe.json" | head -1 | sed 's/.*: //' | cut -c1-60)"
        probe_module github.com/ray-project/kuberay/ray-operator "$KUBERAY_FALLBACK_VERSION" \
            || die "the Go module proxy serves neither github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION nor @$KUBERAY_FALLBACK_VERSION"
        echo "$KUBERAY_FALLBACK_VERSION" > "$CLUSTER_HOME/kuberay.version"
        log "WARNING: the Go module proxy refuses github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION ($why);"
        log "WARNING: this cluster runs the KubeRay operator $KUBERAY_FALLBACK_VERSION (newest served) against the $KUBERAY_VERSION CRDs of k8s/kuberay"
    fi
    log "preflight ok: $(go env GOVERSION), outward interface $(outward_if), resolver(s) $(resolvers | tr '\n' ' ')"
}

# -------------------------------------------------------------------------------------------- build

build_stamp() { echo "$1 $(go env GOVERSION) $(cat "$HERE/versions.env" "$2" 2>/dev/null | sha256sum | cut -c1-16)"; }  # contents, not paths

built() {  # built NAME STAMP: the binary exists and was built from these pins
    [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.stamp" 2>/dev/null)" = "$2" ]
}

build_kubernetes() {
    local names=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl) stamp n ld="" p
    stamp="$(build_stamp "$K8S_VERSION" "$HERE/build/kubernetes/go.sum")"
    local todo=0; for n in "${names[@]}"; do built "$n" "$stamp" || todo=1; done
    [ "$todo" = 1 ] || { log "kubernetes $K8S_VERSION: built"; return; }
    local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
    # Stamped like an upstream release build (hack/lib/version.sh): unstamped binaries say
    # v0.0.0-master, which fails Helm's kubeVersion checks and KubeRay's version gates.
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    log "building kubernetes $K8S_VERSION (${names[*]}): cold: about 15 minutes on 2 cores; log $LOGS/build-kubernetes.log"
    (cd "$HERE/build/kubernetes" && go build -trimpath -ldflags "-s -w $ld" -o "$BIN/" \
        $(printf 'k8s.io/kubernetes/cmd/%s ' "${names[@]}")) >"$LOGS/build-kubernetes.log" 2>&1 \
        || { tail -20 "$LOGS/build-kubernetes.log" >&2; die "building kubernetes failed (log $LOGS/build-kubernetes.log)"; }
    for n in "${names[@]}"; do echo "$stamp" > "$BIN/.$n.stamp"; done
}

build_etcd() {
    local stamp; stamp="$(build_stamp "$ETCD_VERSION" "$HERE/build/etcd/go.sum")"
    built etcd "$stamp" && { log "etcd $ETCD_VERSION: built"; return; }
    log "building etcd $ETCD_VERSION; log $LOGS/build-etcd.log"
    (cd "$HERE/build/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) \
        >"$LOGS/build-etcd.log" 2>&1 || { tail -20 "$LOGS/build-etcd.log" >&2; die "building etcd failed"; }
    echo "$stamp" > "$BIN/.etcd.stamp"
}

go_install() {  # go_install NAME PACKAGE VERSION: a module without replace directives
    local stamp; stamp="$(build_stamp "$3" /dev/null)"
    built "$1" "$stamp" && { log "$1 $3: built"; return; }
    log "building $1 $3 ($2); log $LOGS/build-$1.log"
    GOBIN="$CLUSTER_HOME/gobin" CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w" "$2@$3" >"$LOGS/build-$1.log" 2>&1 \
        || { tail -20 "$LOGS/build-$1.log" >&2; die "building $1 failed"; }
    cp "$CLUSTER_HOME/gobin/$(basename "${2%%@*}")" "$BIN/$1"
    echo "$stamp" > "$BIN/.$1.stamp"
}

build_pause() {
    # The sandbox ("pause") container from the Kubernetes module's own source, as upstream builds it.
    [ -x "$BIN/pause" ] && { log "pause: built"; return; }
    local src; src="$(GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
    gcc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION" -o "$BIN/pause" "$src/build/pause/linux/pause.c" \
        || die "building pause failed: needs gcc with a static libc (Debian: apt-get install gcc libc6-dev)"
}

build_all() {
    mkdir -p "$BIN" "$LOGS"
    local t0=$SECONDS
    build_kubernetes
    build_etcd
    go_install coredns github.com/coredns/coredns "$COREDNS_VERSION"
    go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
    go_install ray-operator github.com/ray-project/kuberay/ray-operator "$(kuberay_version)"
    build_pause
    log "binaries ready in $((SECONDS - t0)) s: $(cd "$BIN" && ls | tr '\n' ' ')"
}

# ------------------------------------------------------------------------------------ network guard

guard_up() {
    # Installed before any component starts; removed last by down.
    local out dns cidr
    out="$(outward_if)"
    iptables -t mangle -N "$GUARD_CHAIN" 2>/dev/null || iptables -t mangle -F "$GUARD_CHAIN"
    for dns in $(resolvers); do iptables -t mangle -A "$GUARD_CHAIN" -d "$dns/32" -j RETURN; done
    # RFC 1918, shared address space (RFC 6598), link-local: nothing of the cluster may leave for them.
    # Each drop is logged first (rate-limited, kernel log prefix "batchinfer-guard:"), to name the culprit.
    for cidr in 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16; do
        iptables -t mangle -A "$GUARD_CHAIN" -d "$cidr" -m limit --limit 10/min -j LOG --log-prefix "batchinfer-guard: "
        iptables -t mangle -A "$GUARD_CHAIN" -d "$cidr" -j DROP
    done
    iptables -t mangle -C POSTROUTING -o "$out" -j "$GUARD_CHAIN" 2>/dev/null \
        || iptables -t mangle -I POSTROUTING 1 -o "$out" -j "$GUARD_CHAIN"
    # Nothing is forwarded out of the machine at all: pods reach only this host. One known asker is
    # refused at once instead of dropped: Ray's dashboard asks the cloud metadata address on every
    # Kubernetes head, usage stats off or not (Ray 2.60 usage_stats_head.run ->
    # usage_lib.get_cluster_config_to_report -> get_cloud_from_metadata_requests).
    iptables -N "$GUARD_CHAIN" 2>/dev/null || iptables -F "$GUARD_CHAIN"
    iptables -A "$GUARD_CHAIN" -o "$out" -d 169.254.169.254/32 -j REJECT
    iptables -A "$GUARD_CHAIN" -o "$out" -m limit --limit 10/min -j LOG --log-prefix "batchinfer-guard: "
    iptables -A "$GUARD_CHAIN" -o "$out" -j DROP
    iptables -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$GUARD_CHAIN"
    # The same asker on this host: every Ray head started here (the job's local Ray, the tests'
    # clusters) asks it as well. Refused at once from the host too (the mangle drop would count it
    # as a leak, and Ray would wait its 1 s timeout twice); counted apart.
    iptables -N "$GUARD_HOST_CHAIN" 2>/dev/null || iptables -F "$GUARD_HOST_CHAIN"
    iptables -A "$GUARD_HOST_CHAIN" -o "$out" -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset
    iptables -C OUTPUT -j "$GUARD_HOST_CHAIN" 2>/dev/null || iptables -I OUTPUT 1 -j "$GUARD_HOST_CHAIN"
    # Sink routes: the service and fake-node ranges (and the pod range, behind the bridge's own
    # route) go into a veth whose peer sits in a namespace with no routes, so they end there.
    if ! ip link show "$SINK_LINK" >/dev/null 2>&1; then
        ip netns add "$SINK_NETNS" 2>/dev/null || true
        ip link add "$SINK_LINK" type veth peer name bisink1
        ip link set bisink1 netns "$SINK_NETNS"
        ip netns exec "$SINK_NETNS" ip link set bisink1 up
        ip link set "$SINK_LINK" up
    fi
    ip route replace "$SERVICE_CIDR" dev "$SINK_LINK"
    ip route replace "$FAKE_NODE_POD_CIDR" dev "$SINK_LINK"
    ip route replace "$POD_CIDR" dev "$SINK_LINK" metric 4000
    guard_routes_ok || die "the guard is up but a cluster range still routes out through $out"
}

guard_routes_ok() {
    local out cidr dev ok=0
    out="$(outward_if)"
    for cidr in $POD_CIDR $SERVICE_CIDR $FAKE_NODE_POD_CIDR; do
        dev="$(ip -4 route get "${cidr%/*}" | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -1)"
        [ "$dev" = "$out" ] && { echo "cluster: ip route get ${cidr%/*} uses the outward interface $out" >&2; ok=1; }
    done
    return $ok
}

guard_report() {  # the guard's counters and routes, one line each (the e2e parses it)
    local out cidr
    out="$(outward_if)"
    iptables -t mangle -L "$GUARD_CHAIN" -nvx 2>/dev/null | awk -v o="$out" 'NR > 2 && $3 == "DROP" {print "drop", "mangle", o, $9, $1}'
    iptables -L "$GUARD_CHAIN" -nvx 2>/dev/null | awk -v o="$out" 'NR > 2 && $3 == "DROP" {print "drop", "forward", o, "0.0.0.0/0", $1}
                                                          NR > 2 && $3 == "REJECT" {print "refused", "forward", o, $9, $1}'
    iptables -L "$GUARD_HOST_CHAIN" -nvx 2>/dev/null | awk -v o="$out" 'NR > 2 && $3 == "REJECT" {print "refused", "output", o, $9, $1}'
    for cidr in $POD_CIDR $SERVICE_CIDR $FAKE_NODE_POD_CIDR; do
        echo "route $cidr $(ip -4 route get "${cidr%/*}" | head -1 | sed -n 's/.* dev \([^ ]*\).*/\1/p')"
    done
}

guard_down() {
    local out; out="$(outward_if)"
    ip route del "$SERVICE_CIDR" dev "$SINK_LINK" 2>/dev/null || true
    ip route del "$FAKE_NODE_POD_CIDR" dev "$SINK_LINK" 2>/dev/null || true
    ip route del "$POD_CIDR" dev "$SINK_LINK" metric 4000 2>/dev/null || true
    ip link del "$SINK_LINK" 2>/dev/null || true
    ip netns del "$SINK_NETNS" 2>/dev/null || true
    while iptables -t mangle -D POSTROUTING -o "$out" -j "$GUARD_CHAIN" 2>/dev/null; do :; done
    iptables -t mangle -F "$GUARD_CHAIN" 2>/dev/null && iptables -t mangle -X "$GUARD_CHAIN"
    while iptables -D FORWARD -j "$GUARD_CHAIN" 2>/dev/null; do :; done
    iptables -F "$GUARD_CHAIN" 2>/dev/null && iptables -X "$GUARD_CHAIN"
    while iptables -D OUTPUT -j "$GUARD_HOST_CHAIN" 2>/dev/null; do :; done
    iptables -F "$GUARD_HOST_CHAIN" 2>/dev/null && iptables -X "$GUARD_HOST_CHAIN"
    return 0
}

network_up() {
    mkdir -p "$RUN"
    guard_up
    # The node's bridge, made before the CNI plugin so that every server can bind its address.
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    # Kernel settings, remembered so that down puts them back.
    # The kubelet sets vm.* and kernel.* defaults of its own (kubelet's setupKernelTunables), so
    # those are remembered too.
    if [ ! -f "$RUN/sysctl.saved" ]; then
        sysctl $SYSCTLS_TOUCHED 2>/dev/null | sed 's/ = /=/' > "$RUN/sysctl.saved"
    fi
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
        fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288
    # Mount propagation for the kubelet's and containerd's roots only (the machine's / is private).
    if ! findmnt -rn "$STATE" >/dev/null; then
        mkdir -p "$STATE"
        mount --bind "$STATE" "$STATE"
        mount --make-rshared "$STATE"
    fi
    touch "$RUN/network.up"
}

network_down() {
    ip link del "$BRIDGE" 2>/dev/null || true
    # Pod veths go with their network namespaces (containerd's, under /run/netns: cni-*).
    local l
    for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^veth' || true); do
        ip link show "$l" | grep -q "master $BRIDGE" && ip link del "$l"
    done
    if [ -f "$RUN/sysctl.saved" ]; then
        local setting
        while read -r setting; do
            sysctl -q -w "$setting" >/dev/null || log "could not put back $setting"
        done < "$RUN/sysctl.saved"
        rm -f "$RUN/sysctl.saved"
    fi
    guard_down
    rm -f "$RUN/network.up"
}

# ---------------------------------------------------------------------------------------------- pki

pki_up() {
    [ -f "$PKI/ca.crt" ] && return
    mkdir -p "$PKI"
    log "certificates (a private CA under $PKI)"
    (
        cd "$PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=batchinfer-local-ca" 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        cert() {  # cert NAME SUBJECT [SAN]
            openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
            local ext="extendedKeyUsage=clientAuth,serverAuth"
            [ -n "${3:-}" ] && ext="$ext
subjectAltName=$3"
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$1.crt" \
                -extfile <(echo "$ext") 2>/dev/null
            rm -f "$1.csr"
        }
        local svc_ip; svc_ip="$(python3 -c "import ipaddress; print(ipaddress.ip_network('$SERVICE_CIDR')[1])")"
        cert apiserver "/CN=kube-apiserver" "IP:$NODE_IP,IP:$svc_ip,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
        cert admin "/O=system:masters/CN=batchinfer-admin"
        cert controller-manager "/CN=system:kube-controller-manager"
        cert scheduler "/CN=system:kube-scheduler"
        cert kube-proxy "/CN=system:kube-proxy"
        cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
        cert coredns "/CN=system:coredns"
        cert kwok "/O=system:masters/CN=kwok-controller"
    )
    local n
    for n in admin controller-manager scheduler kube-proxy kubelet coredns kwok; do
        kubeconfig "$CLUSTER_HOME/$n.kubeconfig" "$n"
    done
    cp "$CLUSTER_HOME/admin.kubeconfig" "$CLUSTER_HOME/kubeconfig"
}

kubeconfig() {  # kubeconfig FILE CERT
    KUBECONFIG="$1" kubectl config set-cluster local --server="https://$NODE_IP:$APISERVER_PORT" \
        --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
    KUBECONFIG="$1" kubectl config set-credentials "$2" --client-certificate="$PKI/$2.crt" \
        --client-key="$PKI/$2.key" --embed-certs >/dev/null
    KUBECONFIG="$1" kubectl config set-context local --cluster=local --user="$2" >/dev/null
    KUBECONFIG="$1" kubectl config use-context local >/dev/null
}

# ------------------------------------------------------------------------------------ host processes

start() {  # start NAME COMMAND...: a host process in its own session, pid in run/NAME.pid
    local name="$1"; shift
    if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then return; fi
    setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
    local what="$1" secs="$2" i; shift 2
    for i in $(seq 1 $((secs * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    die "$what did not come up in $secs s (logs in $LOGS)"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

stop() {  # stop NAME: SIGTERM its process group, then SIGKILL after 20 s
    local pid i
    pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { log "$1 (pid $pid) did not stop on SIGTERM: SIGKILL"; kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; }
    fi
    rm -f "$RUN/$1.pid"
}

control_plane_up() {
    mkdir -p "$STATE/etcd" "$LOGS"
    start etcd etcd --name local --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --log-level warn
    wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
    start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" --kubelet-preferred-address-types InternalIP \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --authorization-mode Node,RBAC --allow-privileged=true \
        --enable-admission-plugins NodeRestriction,ExtendedResourceToleration \
        --profiling=false --v=1
    wait_for kube-apiserver 90 kubectl get --raw /readyz
    start kube-controller-manager kube-controller-manager --kubeconfig "$CLUSTER_HOME/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_HOME/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_HOME/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1
    start kube-scheduler kube-scheduler --kubeconfig "$CLUSTER_HOME/scheduler.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_HOME/scheduler.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_HOME/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

has_cap_sys_resource() {  # CAP_SYS_RESOURCE (bit 24) in this shell's effective set
    (( (0x$(awk '/^CapEff:/ {print $2}' /proc/self/status) >> 24) & 1 ))
}

node_up() {
    # Without CAP_SYS_RESOURCE (some VMs' root lacks it) runc cannot lower a sandbox's oom_score_adj to
    # the kubelet's -998 and every pod fails ("can't get final child's PID"): containerd then keeps
    # each container's score no lower than its own.
    has_cap_sys_resource || log "no CAP_SYS_RESOURCE here: containerd restricts oom_score_adj (restrict_oom_score_adj)"
    mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/pod-logs" "$RUN/containerd"
    cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  restrict_oom_score_adj = $(has_cap_sys_resource && echo false || echo true)
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
EOF
    # No gateway mode: the bridge already holds NODE_IP, and the plugin would turn on forwarding.
    cat > "$STATE/cni/net.d/10-batchinfer.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "batchinfer",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP",
              "rangeStart": "${POD_CIDR%.0.0/*}.1.1"}]],
              "routes": [{"dst": "0.0.0.0/0", "gw": "$NODE_IP"}],
              "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    start containerd containerd --config "$STATE/containerd/config.toml"
    wait_for containerd 30 ctr --address "$RUN/containerd.sock" version
    images_up
    cat > "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# This machine has cgroup v1; kubelet >= 1.35 refuses it unless told (KEP-5573).
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $STATE/pod-logs
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
# The images are imported, never pulled: the kubelet must never delete one to free disk, so image
# GC is off and every eviction signal has a small absolute threshold (one left out takes the
# kubelet's default, e.g. imagefs.available 15%, which a developer's full disk crosses at once).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 1Gi, nodefs.inodesFree: 1%, imagefs.available: 1Gi, imagefs.inodesFree: 1%}
serializeImagePulls: false
EOF
    start kubelet kubelet --config "$STATE/kubelet/config.yaml" --kubeconfig "$CLUSTER_HOME/kubelet.kubeconfig" \
        --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --hostname-override "$NODE_NAME" \
        --node-ip "$NODE_IP" --v=1
    cat > "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $CLUSTER_HOME/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# Leave the machine's conntrack settings alone (kube-proxy would raise them).
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
    start kube-proxy kube-proxy --config "$STATE/kube-proxy.yaml" --v=1
    wait_for "the node $NODE_NAME" 120 kubectl get node "$NODE_NAME"
    kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null \
        || die "node $NODE_NAME is not Ready (kubelet log: $LOGS/kubelet.log)"
}

images_up() {
    # The sandbox image and the KubeRay operator's are made here from the binaries just built;
    # the job's image comes from docker/ (docker/e2e.sh --save). Nothing is ever pulled.
    local ctr_="ctr --address $RUN/containerd.sock -n k8s.io"
    if ! $ctr_ images ls -q | grep -qx "$PAUSE_IMAGE"; then
        oci_image "$PAUSE_IMAGE" /pause "$BIN/pause" 65535 | $ctr_ images import - >/dev/null
    fi
    local op="quay.io/kuberay/operator:$(kuberay_version)"
    if ! $ctr_ images ls -q | grep -qx "$op"; then
        oci_image "$op" /manager "$BIN/ray-operator" 65532 | $ctr_ images import - >/dev/null
    fi
    load_job_image
}

oci_image() {  # oci_image REF PATH-IN-IMAGE BINARY UID: a one-file OCI image archive on stdout
    python3 "$HERE/oci_image.py" "$@"
}

JOB_IMAGE="${CLUSTER_JOB_IMAGE:-batchinfer:0.1.0}"   # what `make image` builds
load_job_image() {
    local ctr_="ctr --address $RUN/containerd.sock -n k8s.io" tar="$CLUSTER_HOME/images/job.pipe" key
    key="$(job_image_key)"
    if $ctr_ images ls -q | grep -qx "docker.io/library/$JOB_IMAGE" && [ "$(cat "$CLUSTER_HOME/images/job.id" 2>/dev/null)" = "$key" ]; then
        log "image $JOB_IMAGE: loaded"; return
    fi
    mkdir -p "$CLUSTER_HOME/images"
    # Streamed: docker save writes into a pipe that ctr imports from, so the ~7 GB archive never
    # lands on disk beside the image's two other copies (docker's and containerd's).
    log "building the job image $JOB_IMAGE with docker/e2e.sh and streaming it into the node's containerd (log $LOGS/image.log)"
    rm -f "$tar"; mkfifo "$tar"
    $ctr_ images import "$tar" >"$LOGS/image-import.log" 2>&1 &
    local importer=$!
    if ! E2E_IMAGE="$JOB_IMAGE" bash "$ROOT/docker/e2e.sh" --save "$tar" >"$LOGS/image.log" 2>&1; then
        kill "$importer" 2>/dev/null; rm -f "$tar"
        tail -30 "$LOGS/image.log" >&2; die "building the job image failed (log $LOGS/image.log)"
    fi
    wait "$importer" || { rm -f "$tar"; cat "$LOGS/image-import.log" >&2; die "importing the job image failed"; }
    rm -f "$tar"
    echo "$key" > "$CLUSTER_HOME/images/job.id"
}

image_current() {  # the node's containerd holds the job image of this source tree
    [ "$(cat "$CLUSTER_HOME/images/job.id" 2>/dev/null)" = "$(job_image_key)" ]
}

job_image_key() {  # what the job image is built from: a change rebuilds it
    (cd "$ROOT" && cat docker/Dockerfile constraints.txt pyproject.toml && git ls-files -s src) | sha256sum | cut -c1-16
}

dns_up() {
    cat > "$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $CLUSTER_HOME/coredns.kubeconfig local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
    # CoreDNS reads Services, EndpointSlices, Pods and Namespaces: the role its own manifests give it.
    kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: User, name: "system:coredns"}]
EOF
    start coredns coredns -conf "$STATE/Corefile"
    wait_for CoreDNS 30 bash -c "getent hosts >/dev/null; python3 - <<'PY'
import socket, struct
q = struct.pack('>HHHHHH', 1, 0x100, 1, 0, 0, 0) + b''.join(bytes([len(p)]) + p.encode() for p in 'kubernetes.default.svc.cluster.local'.split('.')) + b'\x00\x00\x01\x00\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); s.sendto(q, ('$NODE_IP', 53))
assert struct.unpack('>H', s.recv(512)[6:8])[0] >= 1
PY"
}

kuberay_up() {
    # As docs/kubernetes.md documents it, then the operator image made from the built binary.
    local v; v="$(kuberay_version)"
    # A fallback operator image set by an earlier `up` would conflict with the apply (another field
    # manager owns the image): put the documented image back first, so the apply stays as documented.
    if [ "$v" != "$KUBERAY_VERSION" ] && kubectl -n "$KUBERAY_NAMESPACE" get deploy/kuberay-operator >/dev/null 2>&1; then
        kubectl -n "$KUBERAY_NAMESPACE" set image deploy/kuberay-operator "kuberay-operator=quay.io/kuberay/operator:$KUBERAY_VERSION" >/dev/null
    fi
    log "KubeRay: kubectl apply --server-side -k k8s/kuberay"
    kubectl apply --server-side -k "$ROOT/k8s/kuberay" >"$LOGS/kuberay-apply.log" 2>&1 \
        || { cat "$LOGS/kuberay-apply.log" >&2; die "installing KubeRay from k8s/kuberay failed"; }
    if [ "$v" != "$KUBERAY_VERSION" ]; then
        log "WARNING: operator image set to quay.io/kuberay/operator:$v (the proxy refuses $KUBERAY_VERSION's source)"
        kubectl -n "$KUBERAY_NAMESPACE" set image deploy/kuberay-operator "kuberay-operator=quay.io/kuberay/operator:$v" >/dev/null
    fi
    kubectl -n "$KUBERAY_NAMESPACE" rollout status deploy/kuberay-operator --timeout=300s >/dev/null \
        || { kubectl -n "$KUBERAY_NAMESPACE" describe pod >&2; die "the KubeRay operator did not become ready"; }
}

s3_up() {
    # SeaweedFS (devkit's pinned server) on NODE_IP: pods and the host reach it at the same address.
    [ -x "$ROOT/.venv/bin/python" ] || die "no project venv: run 'make venv' first (it installs SeaweedFS)"
    alive seaweedfs && return
    mkdir -p "$STATE/s3"
    (cd "$ROOT" && .venv/bin/python -m devkit.seaweed serve --host "$NODE_IP" --dir "$STATE/s3" \
        --env-file "$S3_ENV" --pidfile "$RUN/seaweedfs.pid") >"$LOGS/seaweedfs.log" 2>&1 \
        || { tail -5 "$LOGS/seaweedfs.log" >&2; die "the S3 server did not start (log $LOGS/seaweedfs.log)"; }
}

kwok_up() {
    # KWOK manages only nodes annotated kwok.x-k8s.io/node=fake; its stages come from its module.
    local dir; dir="$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
    kubectl kustomize "$dir/kustomize/stage/fast" > "$STATE/kwok-stages.yaml"
    start kwok kwok --kubeconfig "$CLUSTER_HOME/kwok.kubeconfig" --config "$STATE/kwok-stages.yaml" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --cidr "$FAKE_NODE_POD_CIDR" --node-ip "${FAKE_NODE_POD_CIDR%.0.0/*}.0.1" \
        --server-address 127.0.0.1:10247 --enable-crds= --tls-cert-file= --tls-private-key-file=
}

print_env() {
    cat <<EOF
# batchinfer local cluster (k8s/local/cluster.sh); source it: eval "\$(make -s cluster-env)"
export KUBECONFIG=$CLUSTER_HOME/kubeconfig KUBECACHEDIR=$CLUSTER_HOME/kube-cache
export PATH=$BIN:\$PATH
# S3 (SeaweedFS): the same endpoint for this host and for pods; credentials in the file
export BATCHINFER_S3_ENDPOINT=$(sed -n 's/^AWS_ENDPOINT_URL=//p' "$S3_ENV")
export BATCHINFER_S3_ENV=$S3_ENV
EOF
}

disk_free() {
    # The job's image takes ~14 GB in the node's containerd (layers and their unpacked copy) beside its
    # docker build; below the kubelet's eviction floor every imported image would be deleted.
    [ -f "$RUN/network.up" ] && return
    mkdir -p "$CLUSTER_HOME"
    local free_gib need=20; free_gib=$(( $(df -Pk "$CLUSTER_HOME" | awk 'NR == 2 {print $4}') / 1048576 ))
    image_current && need=5   # imported already: pods' logs and scratch only
    [ "$free_gib" -ge "$need" ] \
        || die "only $free_gib GiB free under $CLUSTER_HOME: the cluster needs $need (the job image twice, in docker and in containerd); free some (docker image prune) or set CLUSTER_HOME elsewhere"
}

ports_free() {  # the cluster's fixed ports, checked before it starts (a running cluster holds them)
    [ -f "$RUN/network.up" ] && return
    ip link show "$BRIDGE" >/dev/null 2>&1 && die "interface $BRIDGE exists but this cluster did not make it (another CLUSTER_HOME's cluster?): run 'make cluster-down' there, or ip link del $BRIDGE"
    local port
    for port in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT 10250 10248 10249 10256 10257 10259; do
        port_busy "$port" && die "port $port is busy (ss -ltnp 'sport = :$port' shows who): stop that process or run 'make cluster-down'"
    done
    return 0
}

up() {
    local t0=$SECONDS
    preflight
    ports_free
    disk_free
    build_all
    log "network: the guard first (drops on $(outward_if) to private ranges but $(resolvers | tr '\n' ' '))"
    network_up
    pki_up
    control_plane_up
    node_up
    dns_up
    kuberay_up
    s3_up
    kwok_up
    log "cluster up in $((SECONDS - t0)) s"
    echo
    echo "KUBECONFIG=$CLUSTER_HOME/kubeconfig   (kubectl and helm: export it, or eval \"\$(make -s cluster-env)\")"
    echo "S3 endpoint: $(sed -n 's/^AWS_ENDPOINT_URL=//p' "$S3_ENV") (the same for this host and for pods); credentials: $S3_ENV (AWS_* variables)"
    echo "KubeRay operator: $(kuberay_version) in namespace $KUBERAY_NAMESPACE; node $NODE_NAME; job image $JOB_IMAGE"
    echo "next: docs/kubernetes.md \"Try it on one machine\"; stop with: make cluster-down"
}

# --------------------------------------------------------------------------------------------- down

down() {
    mkdir -p "$RUN"
    # Pods first, while the kubelet still runs, so that their sandboxes and mounts go cleanly; the
    # controllers stop before, or they would start new pods for the deleted ones.
    if alive kubelet && alive kube-apiserver; then
        stop kube-controller-manager; stop kube-scheduler
        log "deleting every pod"
        kubectl delete pods --all --all-namespaces --grace-period=5 --timeout=60s >/dev/null 2>&1 || true
    fi
    local i
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        [ -f "$RUN/${COMPONENTS[$i]}.pid" ] && { log "stopping ${COMPONENTS[$i]}"; stop "${COMPONENTS[$i]}"; }
    done
    # containerd's shims outlive it by design: stop those of this cluster's containerd.
    local pid
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.5
    # Mounts under the state dir (pod volumes, container rootfs, sandbox shm), deepest first.
    { findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)(/|$)" || true; } | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    # A container whose shim is gone lives on in the kubelet's pod cgroups: end it there.
    local procs
    procs="$(find /sys/fs/cgroup -path '*/kubepods*' -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
    [ -n "$procs" ] && { log "killing container processes left: $(echo $procs)"; kill -KILL $procs 2>/dev/null || true; sleep 1; }
    # Pod network namespaces containerd made (their veths go with them).
    for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
    # The kubelet's pod cgroups.
    find /sys/fs/cgroup -depth -type d -path '*/kubepods*' -exec rmdir {} + 2>/dev/null || true
    # kube-proxy's rules, then the kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...).
    [ -x "$BIN/kube-proxy" ] && kube-proxy --cleanup >/dev/null 2>&1 || true
    kube_chains_down
    network_down
    rm -rf "$RUN"
    check && log "cluster down: nothing left"
}

kube_chains_down() {  # every KUBE-* chain in every table (IPv4 and IPv6), and the rules that jump to them
    local cmd table rule chain
    for cmd in iptables ip6tables; do
        for table in filter nat mangle; do
            { $cmd -t "$table" -S 2>/dev/null | grep -E '^-A .*-j KUBE-' | sed 's/^-A /-D /' || true; } | while read -r rule; do
                eval "$cmd -t $table $rule" 2>/dev/null || true
            done
            for chain in $($cmd -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
                $cmd -t "$table" -F "$chain" 2>/dev/null || true
            done
            for chain in $($cmd -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
                $cmd -t "$table" -X "$chain" 2>/dev/null || true
            done
        done
    done
}

check() {  # check: what is left of a cluster; non-zero when anything is
    local left=0 pid cmd
    # Every process of the cluster names a path under CLUSTER_HOME (config, data dir, socket).
    while read -r pid cmd; do
        case "$(basename "$cmd")" in
            etcd|kube-*|kubelet|containerd|containerd-shim*|coredns|kwok|weed) echo "left: process $(basename "$cmd") ($pid)"; left=1 ;;
        esac
    done < <(pgrep -af -- "$CLUSTER_HOME/" | awk '{print $1, $2}')
    findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)(/|$)" | sed 's/^/left: mount /' | grep . && left=1
    ip link show "$BRIDGE" >/dev/null 2>&1 && { echo "left: interface $BRIDGE"; left=1; }
    ip link show "$SINK_LINK" >/dev/null 2>&1 && { echo "left: interface $SINK_LINK"; left=1; }
    ip netns list 2>/dev/null | grep -E "^(cni-|$SINK_NETNS)" | sed 's/^/left: netns /' | grep . && left=1
    { iptables-save; ip6tables-save; } 2>/dev/null | grep -E "$GUARD_CHAIN|KUBE-" | head -3 | sed 's/^/left: rule /' | grep . && left=1
    find /sys/fs/cgroup -maxdepth 3 -type d -name 'kubepods*' 2>/dev/null | head -3 | sed 's/^/left: cgroup /' | grep . && left=1
    return $left
}

case "${1:-}" in
    preflight) preflight ;;
    build) preflight; build_all ;;
    up) up ;;
    down) down ;;
    check) check ;;
    guard) guard_report ;;
    env) print_env ;;
    image-current) image_current ;;
    *) sed -n '2,/^set /{/^#/p}' "$0"; exit 2 ;;
esac
