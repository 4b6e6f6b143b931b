#!/usr/bin/env bash
# The UI benchmark: the same headless Chromium (Debian's, driven by playwright-core) against
# Capstan's web UI (release build, `capstan server`, SQLite, the release wasm bundle embedded)
# and MLflow's UI (`mlflow server` of the full mlflow 3.17.2 package, SQLite, 2 workers), on
# the same data loaded through the same REST requests (bench/ui/load.py), side by side in
# one run, on loopback. Prints the JSON of bench/ui/bench.mjs; BENCHMARKS.md records it.
#
#   bench/ui/run.sh
#
# RUNS (default 10000) runs of 10 metrics and 5 params; BIG (default 1000000) points in one
# metric; REPEAT (default 3) cold page loads per figure (the median is reported).
# CARGO_TARGET_DIR (default target) is where the release build goes (its own directory
# keeps it off the debug builds' lock).
# MLflow goes into the virtual environment bench/tracking/run.sh uses
# (${XDG_CACHE_HOME:-~/.cache}/capstan/bench-venv, CAPSTAN_BENCH_VENV).
set -euo pipefail
cd "$(dirname "$0")/../.."

MLFLOW_VERSION=3.17.2
VENV="${CAPSTAN_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan/bench-venv}"
RUNS="${RUNS:-10000}"
BIG="${BIG:-1000000}"
export REPEAT="${REPEAT:-3}"
log() { echo "bench-ui: $*" >&2; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
scripts/ui-deps.sh
log "building the release wasm bundle and capstan (release, in $TARGET_DIR)"
export CAPSTAN_UI_SITE_DIR="$(realpath -m "$TARGET_DIR")/site-release"
scripts/build-ui.sh --release
cargo build --release --locked -p capstan >&2
CAPSTAN="$TARGET_DIR/release/capstan"
log "wasm bundle: $(stat -c %s "$CAPSTAN_UI_SITE_DIR/pkg/capstan_ui_bg.wasm") bytes"

if ! "$VENV/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION')" 2>/dev/null; then
    log "installing mlflow==$MLFLOW_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "mlflow==$MLFLOW_VERSION" >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-ui-XXXXXX")"
CAPSTAN_PID=""
MLFLOW_PID=""
cleanup() {
    [ -n "$CAPSTAN_PID" ] && kill "$CAPSTAN_PID" 2>/dev/null || true
    [ -n "$MLFLOW_PID" ] && kill -- "-$MLFLOW_PID" 2>/dev/null || kill "$MLFLOW_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "bench-ui: $1 did not answer" >&2
    return 1
}

CPORT="$(free_port)"
"$CAPSTAN" server --listen "127.0.0.1:$CPORT" --data-dir "$WORK/capstan" >"$WORK/capstan.log" 2>&1 &
CAPSTAN_PID=$!
MPORT="$(free_port)"
setsid "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$MPORT" --workers 2 \
    --backend-store-uri "sqlite:///$WORK/mlflow.db" --default-artifact-root "$WORK/mlflow-artifacts" \
    >"$WORK/mlflow.log" 2>&1 &
MLFLOW_PID=$!
wait_http "http://127.0.0.1:$CPORT/healthz"
wait_http "http://127.0.0.1:$MPORT/health"

log "loading $RUNS runs and a $BIG-point metric into capstan"
CDATA="$(python3 bench/ui/load.py "http://127.0.0.1:$CPORT" "$RUNS" "$BIG" | tail -1)"
log "capstan: $CDATA"
log "loading the same into mlflow"
MDATA="$(python3 bench/ui/load.py "http://127.0.0.1:$MPORT" "$RUNS" "$BIG" | tail -1)"
log "mlflow: $MDATA"

log "measuring in headless chromium (REPEAT=$REPEAT)"
node bench/ui/bench.mjs "http://127.0.0.1:$CPORT" "$CDATA" "http://127.0.0.1:$MPORT" "$MDATA"
