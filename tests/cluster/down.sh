#!/usr/bin/env bash
# Stops the control plane started by up.sh in DIR (kwok, controller manager, API server, etcd).
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$1"
for name in kwok controller-manager apiserver etcd; do
    pidfile="$DIR/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
echo "cluster-down: stopped $DIR" >&2
