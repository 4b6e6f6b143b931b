#!/usr/bin/env bash
# Sets up a local Podman Docker-API service for Capstan's container runtime tests (and CI).
#
#   scripts/podman-setup.sh STATE_DIR
#   eval "$(scripts/podman-setup.sh /tmp/capstan-podman)"
#
# - installs podman, runc and busybox-static with apt-get when missing;
# - writes STATE_DIR/containers.conf (runc: crun refuses the hybrid cgroup layout; cgroupfs
#   manager; no default ulimits);
# - imports localhost/capstan-busybox:1 from busybox-static (no registry needed);
# - starts `podman system service` on unix://STATE_DIR/podman.sock unless it already answers;
# - prints `export CONTAINERS_CONF=...` and `export CAPSTAN_DOCKER_SOCKET=...` for eval.
# Idempotent; everything but the export lines goes to stderr.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd)
CONF="$STATE_DIR/containers.conf"
SOCK="$STATE_DIR/podman.sock"
IMAGE="localhost/capstan-busybox:1"
APPLETS="sh echo ls cat sleep nc env hostname wc grep sed seq true false kill"

log() { echo "podman-setup: $*" >&2; }

# 1. packages
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! [ -x /bin/busybox ] \
    || ! command -v curl >/dev/null; then
    log "installing podman runc busybox-static curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq podman runc busybox-static curl >&2
fi

# 2. configuration
WANT_CONF=$(printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n')
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT_CONF" ]; then
    printf '%s\n' "$WANT_CONF" >"$CONF"
fi
export CONTAINERS_CONF="$CONF"

# 3. image (import a root filesystem: there is no registry)
if ! podman --runtime runc image exists "$IMAGE"; then
    log "importing $IMAGE"
    ROOTFS=$(mktemp -d)
    trap 'rm -rf "$ROOTFS"' EXIT
    mkdir -p "$ROOTFS/rootfs/bin" "$ROOTFS/rootfs/tmp"
    chmod 1777 "$ROOTFS/rootfs/tmp"
    cp /bin/busybox "$ROOTFS/rootfs/bin/busybox"
    for applet in $APPLETS; do
        ln -sf busybox "$ROOTFS/rootfs/bin/$applet"
    done
    tar -C "$ROOTFS/rootfs" -cf "$ROOTFS/rootfs.tar" .
    podman --runtime runc import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' \
        "$ROOTFS/rootfs.tar" "$IMAGE" >&2
fi

# 4. service
answers() {
    curl -sf --max-time 2 --unix-socket "$SOCK" http://d/v1.41/version >/dev/null 2>&1
}
if ! answers; then
    if [ -f "$STATE_DIR/podman.pid" ]; then
        OLD=$(cat "$STATE_DIR/podman.pid")
        if [ -n "$OLD" ] && kill -0 "$OLD" 2>/dev/null; then
            log "podman service pid $OLD does not answer; stopping it"
            kill "$OLD" 2>/dev/null || true
            sleep 1
        fi
    fi
    rm -f "$SOCK"
    log "starting podman system service on unix://$SOCK (log $STATE_DIR/podman.log)"
    CONTAINERS_CONF="$CONF" setsid nohup podman --runtime runc system service --time=0 \
        "unix://$SOCK" </dev/null >>"$STATE_DIR/podman.log" 2>&1 &
    echo $! >"$STATE_DIR/podman.pid"
    for _ in $(seq 1 60); do
        if answers; then
            break
        fi
        sleep 0.5
    done
    if ! answers; then
        log "ERROR: podman service did not answer on $SOCK within 30 s; its log:"
        tail -n 30 "$STATE_DIR/podman.log" >&2 || true
        exit 1
    fi
fi
log "podman service answers on unix://$SOCK"

echo "export CONTAINERS_CONF=$CONF"
echo "export CAPSTAN_DOCKER_SOCKET=$SOCK"
