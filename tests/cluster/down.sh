#!/usr/bin/env bash
# Stops the control plane started by up.sh in DIR (kwok, scheduler, controller manager, API server, etcd).
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$1"
# Alive and not a zombie (a killed process whose parent is gone may linger as one here).
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
for name in kwok scheduler controller-manager apiserver etcd; do
    pidfile="$DIR/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
echo "cluster-down: stopped $DIR" >&2
