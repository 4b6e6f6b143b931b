#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian (bookworm) machine, and skips
# what is already there, so a repeat run costs seconds:
#   - Debian packages: podman, runc, busybox-static (container and process runtimes), curl;
#   - the Rust toolchain's rustfmt/clippy components;
#   - Python packages: the real `mlflow` client (mlflow-skinny) the tracking tests drive.
# Needs root (or passwordless sudo) for apt-get.
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES="podman runc busybox-static curl"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $missing >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
if ! python3 -c "import mlflow, sys; sys.exit(0 if mlflow.__version__ == '$MLFLOW_VERSION' else 1)" 2>/dev/null; then
    log "pip install mlflow-skinny==$MLFLOW_VERSION"
    python3 -m pip install -q --disable-pip-version-check "mlflow-skinny==$MLFLOW_VERSION"
fi
log "ok"
