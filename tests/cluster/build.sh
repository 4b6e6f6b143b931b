#!/usr/bin/env bash
# Builds the test control plane from published Go modules, once, into the user cache:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, podresources-server (this module: k8s.io/kubernetes
#   v1.34.4 with every staging module pinned by replace directives; etcd v3.6 as k8s pins it)
#   kwok, helm                                               (their own module graphs: go install)
# The cache key is the hash of go.mod, go.sum and TOOLS_REVISION (bump it when a build flag
# changes), so a second run costs nothing; a tool added to the list is built into the same
# cache on the next run.
# Prints the bin directory. Nothing is downloaded but Go modules from the module proxy.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION=v1.34.4
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
TOOLS_REVISION=2
KEY=$( (cat "$HERE/go.mod" "$HERE/go.sum"; echo "$TOOLS_REVISION $K8S_VERSION $KWOK_VERSION $HELM_VERSION") | sha256sum | cut -c1-16)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/capstan/cluster/$KEY"
BIN="$CACHE/bin"
log() { echo "cluster-build: $*" >&2; }
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean"
build() { # name package
    if [ ! -x "$BIN/$1" ]; then
        log "building $1 ($2)"
        (cd "$HERE" && go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$1.tmp" "$2") && mv "$BIN/$1.tmp" "$BIN/$1"
    fi
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubectl k8s.io/kubernetes/cmd/kubectl
# The kubelet's pod-resources gRPC server, with pods from a file (see podresources/main.go).
build podresources-server ./podresources
install_tool() { # name module@version
    if [ ! -x "$BIN/$1" ]; then
        log "installing $1 ($2)"
        GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "$2"
    fi
}
install_tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
install_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "$BIN"
