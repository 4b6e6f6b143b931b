#!/usr/bin/env bash
# Starts a real Kubernetes control plane for the tests, built from published Go modules
# (see build.sh): etcd, kube-apiserver, kube-scheduler, kube-controller-manager (garbage collector,
# namespaces, service accounts) and kwok, which plays the kubelets of NODES fake 8-GPU nodes
# spread over racks and blocks.
#
#   tests/cluster/up.sh DIR        # NODES=4 by default
#   export KUBECONFIG=DIR/kubeconfig; DIR/bin/kubectl get nodes
#   tests/cluster/down.sh DIR
#
# Writes DIR/kubeconfig (cluster-admin by static token), DIR/bin/{kubectl,helm,podresources-server}, logs and pid
# files in DIR. Ports are chosen free on 127.0.0.1. Nothing is downloaded.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
NODES="${NODES:-4}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
GPU_PRODUCT="${GPU_PRODUCT:-NVIDIA-H100-80GB-HBM3}"
log() { echo "cluster-up: $*" >&2; }
die() { echo "cluster-up: $*" >&2; exit 1; }

# The tools the suites run, linked into DIR/bin (built or found in the cache by build.sh).
link_tools() {
    BIN="$("$HERE/build.sh")"
    mkdir -p "$DIR/bin" "$DIR/pki"
    for tool in kubectl helm podresources-server; do ln -sf "$BIN/$tool" "$DIR/bin/$tool"; done
}

if [ -f "$DIR/apiserver.pid" ] && kill -0 "$(cat "$DIR/apiserver.pid")" 2>/dev/null && [ -f "$DIR/kubeconfig" ]; then
    if "$DIR/bin/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
        log "reusing the control plane already running in $DIR"
        link_tools
        echo "export KUBECONFIG=$DIR/kubeconfig"
        exit 0
    fi
    log "a control plane recorded in $DIR does not answer: stopping what is left of it and starting afresh"
    "$HERE/down.sh" "$DIR" 2>/dev/null || true
fi
link_tools

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port); KCM_PORT=$(free_port); KWOK_PORT=$(free_port)
SCHED_PORT=$(free_port)

# --- PKI: a CA, the API server's serving certificate (127.0.0.1, localhost), service-account keys,
# and a static cluster-admin token.
PKI="$DIR/pki"
if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=capstan-test-ca" \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$PKI/apiserver.key" \
        -out "$PKI/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' > "$PKI/san.ext"
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -extfile "$PKI/san.ext" -out "$PKI/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$TOKEN,admin,admin,system:masters" > "$PKI/tokens.csv"
fi
TOKEN=$(cut -d, -f1 "$PKI/tokens.csv")

start() { # name command...
    local name=$1; shift
    setsid "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
    echo $! > "$DIR/$name.pid"
}

log "etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$BIN/etcd" --data-dir "$DIR/etcd" --name default \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER" --unsafe-no-fsync --log-level warn

log "kube-apiserver on https://127.0.0.1:$API_PORT"
start apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --secure-port "$API_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode RBAC --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --token-auth-file "$PKI/tokens.csv" \
    --disable-admission-plugins ServiceAccount \
    --cert-dir "$DIR/apiserver-certs"

cat > "$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: capstan-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: capstan-test
  context:
    cluster: capstan-test
    user: admin
current-context: capstan-test
EOF
export KUBECONFIG="$DIR/kubeconfig"
KUBECTL="$BIN/kubectl"

for i in $(seq 1 120); do
    if curl -sf --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
        break
    fi
    kill -0 "$(cat "$DIR/apiserver.pid")" 2>/dev/null || { tail -20 "$DIR/apiserver.log" >&2; die "kube-apiserver exited"; }
    [ "$i" = 120 ] && { tail -20 "$DIR/apiserver.log" >&2; die "kube-apiserver not ready after 60 s"; }
    sleep 0.5
done
log "API server ready"

# Node lifecycle waits 5 minutes (not 50 s) for a missed kwok heartbeat: on 2 busy cores kwok can
# fall behind, and a node marked NotReady turns its pods not-ready for good (kwok does not set them back).
log "kube-controller-manager (garbage collector, namespaces, service accounts, node lifecycle, deployments)"
start controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/kubeconfig" --authentication-kubeconfig "$DIR/kubeconfig" --authorization-kubeconfig "$DIR/kubeconfig" \
    --controllers garbagecollector,namespace,serviceaccount,serviceaccount-token,nodelifecycle,deployment,replicaset \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --leader-elect=false --secure-port "$KCM_PORT" --bind-address 127.0.0.1 \
    --use-service-account-credentials=false \
    --node-monitor-grace-period 5m

log "kube-scheduler (places pods that do not name their node: Deployments' replicas)"
start scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/kubeconfig" --authentication-kubeconfig "$DIR/kubeconfig" --authorization-kubeconfig "$DIR/kubeconfig" \
    --leader-elect=false --secure-port "$SCHED_PORT" --bind-address 127.0.0.1

log "kwok for nodes annotated kwok.x-k8s.io/node=fake (pod stages: kwok-stages.yaml)"
start kwok "$BIN/kwok" --kubeconfig "$DIR/kubeconfig" --config "$HERE/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT"

# --- Fake GPU nodes: 2 nodes a rack, 2 racks a block.
nodes_yaml="$DIR/nodes.yaml"
: > "$nodes_yaml"
for i in $(seq 0 $((NODES - 1))); do
    cat >> "$nodes_yaml" <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    type: kwok
    capstan.dev/rack: rack-$((i / 2))
    capstan.dev/block: block-$((i / 4))
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: $GPU_PRODUCT
    nvidia.com/gpu.count: "$GPUS_PER_NODE"
    nvidia.com/gpu.memory: "81559"
spec:
  podCIDR: 10.$((64 + i / 256)).$((i % 256)).0/24
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
EOF
done
"$KUBECTL" apply -f "$nodes_yaml" >/dev/null
for i in $(seq 1 120); do
    ready=$("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)
    [ "$ready" -ge "$NODES" ] && break
    [ "$i" = 120 ] && { tail -20 "$DIR/kwok.log" >&2; die "only $ready of $NODES nodes Ready after 60 s"; }
    sleep 0.5
done
log "$NODES nodes Ready; KUBECONFIG=$DIR/kubeconfig"
echo "export KUBECONFIG=$DIR/kubeconfig"
