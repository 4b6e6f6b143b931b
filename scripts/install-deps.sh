#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian (bookworm) machine, and skips
# what is already there, so a repeat run costs seconds:
#   - Debian packages: podman, runc, busybox-static (container and process runtimes), curl,
#     prometheus (the real Prometheus server the GPU-metrics test scrapes capstan with),
#     postgresql (the store and tracking suites run on it too; scripts/postgres-setup.sh);
#   - checks (does not install) Go, and the Rust toolchain with its rustfmt and clippy;
#   - Python packages: the real `mlflow` client (mlflow-skinny) the tracking tests drive,
#     moto's S3-compatible server (scripts/s3-setup.sh) for the artifact tests, and
#     scikit-learn, pandas and skops for the client's scikit-learn model test.
# Needs root (or passwordless sudo) for apt-get.
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES="podman runc busybox-static curl prometheus postgresql"
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

if ! command -v go >/dev/null; then
    echo "install-deps: go is missing: the test control plane (tests/cluster) builds from Go modules; install Go >= 1.24" >&2
    exit 1
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        echo "install-deps: cargo $component is missing: rustup component add rustfmt clippy" >&2
        exit 1
    fi
done

MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
if ! python3 -c "import mlflow, sys; sys.exit(0 if mlflow.__version__ == '$MLFLOW_VERSION' else 1)" 2>/dev/null; then
    log "pip install mlflow-skinny==$MLFLOW_VERSION"
    python3 -m pip install -q --disable-pip-version-check "mlflow-skinny==$MLFLOW_VERSION"
fi
# scikit-learn, pandas and skops (MLflow 3's default format for scikit-learn models) for the
# mlflow.sklearn log_model / register_model / load_model test.
if ! python3 -c "import sklearn, pandas, skops" 2>/dev/null; then
    log "pip install scikit-learn pandas skops"
    python3 -m pip install -q --disable-pip-version-check "scikit-learn==1.9.1" "pandas==3.1.1" "skops==0.16.0"
fi
MOTO_VERSION="${MOTO_VERSION:-5.2.1}"
if ! python3 -c "import moto, flask_cors, sys; sys.exit(0 if moto.__version__ == '$MOTO_VERSION' else 1)" 2>/dev/null; then
    log "pip install moto[server]==$MOTO_VERSION"
    python3 -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
# Model serving tests and benchmark (tests/e2e/tests/serving.rs, bench/serving): ONNX models
# built with onnx, reference outputs from onnxruntime, the real tritonclient and kserve clients
# (kserve's Python model server is the benchmark's anchor).
if ! python3 -c "import onnx, onnxruntime, skl2onnx, tritonclient.http, kserve" 2>/dev/null; then
    log "pip install onnx onnxruntime skl2onnx tritonclient[http] kserve"
    python3 -m pip install -q --disable-pip-version-check "onnx==1.23.2" "onnxruntime==1.32.0" \
        "skl2onnx==1.20.0" "tritonclient[http]==2.73.0" "kserve==0.21.0"
fi
# Real GitHub webhook payloads for the pipeline trigger tests (npm, cached by version).
"$(dirname "$0")/webhook-examples-setup.sh" >/dev/null
# Web UI: chromium, node and playwright-core for the browser tests (tests/e2e/tests/ui.rs).
"$(dirname "$0")/ui-deps.sh"
log "ok"
