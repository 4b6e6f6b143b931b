#!/usr/bin/env bash
# The tracking benchmark: the same MLflow REST load, from one load generator
# (bench/tracking, `tracking-load`), against Capstan (release build, `capstan server`, SQLite)
# and the real `mlflow server` (MLflow 3.17.2, SQLite backend, 2 workers), side by side in
# one run, on loopback. Prints a table; BENCHMARKS.md records its results.
#
#   bench/tracking/run.sh
#
# (a) log-batch ingest, 1000 points per request over 4 keep-alive connections: points/s;
# (b) the full history of one 100,000-point metric through paged get-history (25,000 per
#     page): seconds;
# (c) get-history-bulk-interval, 320 points: from a 1,000,000-point metric on Capstan and
#     from the 100,000-point one on MLflow (and on Capstan for comparison): milliseconds.
#
# MLflow (the full `mlflow` package, not the skinny client the tests use) goes into its own
# virtual environment, ${XDG_CACHE_HOME:-~/.cache}/capstan/bench-venv (CAPSTAN_BENCH_VENV),
# created on first run; the system Python is left alone.
# INGEST_SECONDS (default 15) sets how long each ingest phase sends.
set -euo pipefail
cd "$(dirname "$0")/../.."

MLFLOW_VERSION=3.17.2
VENV="${CAPSTAN_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan/bench-venv}"
INGEST_SECONDS="${INGEST_SECONDS:-15}"
log() { echo "bench: $*" >&2; }

log "building capstan and the load generator (release)"
cargo build --release --locked -p capstan -p capstan-bench-tracking >&2
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
CAPSTAN="$TARGET_DIR/release/capstan"
LOAD="$TARGET_DIR/release/tracking-load"

if ! "$VENV/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION')" 2>/dev/null; then
    log "installing mlflow==$MLFLOW_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "mlflow==$MLFLOW_VERSION" >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-XXXXXX")"
CAPSTAN_PID=""
MLFLOW_PID=""
cleanup() {
    if [ -n "$CAPSTAN_PID" ]; then kill "$CAPSTAN_PID" 2>/dev/null || true; fi
    # mlflow runs in its own process group (setsid): its workers go with it.
    if [ -n "$MLFLOW_PID" ]; then kill -- "-$MLFLOW_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
wait_ready() { # URL NAME LOGFILE
    for _ in $(seq 1 600); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    log "$2 did not answer $1 within 120 s; its log:"
    tail -n 40 "$3" >&2
    exit 1
}

CP="$(free_port)"
"$CAPSTAN" server --listen "127.0.0.1:$CP" --data-dir "$WORK/capstan" >"$WORK/capstan.log" 2>&1 &
CAPSTAN_PID=$!
MP="$(free_port)"
mkdir -p "$WORK/mlflow"
setsid "$VENV/bin/mlflow" server --backend-store-uri "sqlite:///$WORK/mlflow/mlflow.db" \
    --artifacts-destination "$WORK/mlflow/artifacts" --host 127.0.0.1 --port "$MP" --workers 2 \
    >"$WORK/mlflow.log" 2>&1 &
MLFLOW_PID=$!
wait_ready "http://127.0.0.1:$CP/healthz" capstan "$WORK/capstan.log"
wait_ready "http://127.0.0.1:$MP/health" "mlflow server" "$WORK/mlflow.log"
CAP="http://127.0.0.1:$CP"
MLF="http://127.0.0.1:$MP"
log "capstan at $CAP, mlflow $MLFLOW_VERSION at $MLF (work dir $WORK)"
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# (a) ingest
log "(a) ingest: capstan, ${INGEST_SECONDS}s"
CAP_INGEST="$("$LOAD" --url "$CAP" ingest --connections 4 --points 1000 --seconds "$INGEST_SECONDS")"
log "    $CAP_INGEST"
log "(a) ingest: mlflow, ${INGEST_SECONDS}s"
MLF_INGEST="$("$LOAD" --url "$MLF" ingest --connections 4 --points 1000 --seconds "$INGEST_SECONDS")"
log "    $MLF_INGEST"
log "(a') ingest, 10 metrics x 100 steps per request: capstan, then mlflow, ${INGEST_SECONDS}s each"
CAP_INGEST10="$("$LOAD" --url "$CAP" ingest --connections 4 --points 1000 --keys 10 --seconds "$INGEST_SECONDS")"
log "    $CAP_INGEST10"
MLF_INGEST10="$("$LOAD" --url "$MLF" ingest --connections 4 --points 1000 --keys 10 --seconds "$INGEST_SECONDS")"
log "    $MLF_INGEST10"

# (b) full history of 100,000 points
log "(b) writing a 100,000-point metric to each"
CAP_100K="$("$LOAD" --url "$CAP" fill --points 100000 | json_field "['run_id']")"
MLF_100K="$("$LOAD" --url "$MLF" fill --points 100000 | json_field "['run_id']")"
log "(b) paged history: capstan"
CAP_HIST="$("$LOAD" --url "$CAP" history --run-id "$CAP_100K" --expect 100000 --repeat 5)"
log "    $CAP_HIST"
log "(b) paged history: mlflow"
MLF_HIST="$("$LOAD" --url "$MLF" history --run-id "$MLF_100K" --expect 100000 --repeat 3)"
log "    $MLF_HIST"

# (c) bulk interval
log "(c) writing a 1,000,000-point metric to capstan"
CAP_1M="$("$LOAD" --url "$CAP" fill --points 1000000 | json_field "['run_id']")"
log "(c) bulk interval: capstan (1,000,000 and 100,000 points)"
CAP_BULK_1M="$("$LOAD" --url "$CAP" bulk --run-id "$CAP_1M" --max-results 320 --repeat 50)"
CAP_BULK_100K="$("$LOAD" --url "$CAP" bulk --run-id "$CAP_100K" --max-results 320 --repeat 50)"
log "    $CAP_BULK_1M / $CAP_BULK_100K"
log "(c) bulk interval: mlflow (100,000 points)"
MLF_BULK_100K="$("$LOAD" --url "$MLF" bulk --run-id "$MLF_100K" --max-results 320 --repeat 5)"
log "    $MLF_BULK_100K"

python3 - "$CAP_INGEST" "$MLF_INGEST" "$CAP_INGEST10" "$MLF_INGEST10" "$CAP_HIST" "$MLF_HIST" "$CAP_BULK_1M" "$CAP_BULK_100K" "$MLF_BULK_100K" <<'EOF'
import json, sys
ci, mi, ci10, mi10, ch, mh, cb1m, cb100k, mb100k = (json.loads(a) for a in sys.argv[1:])
rows = [
    ("(a) log-batch ingest, 1000 points/request (1 metric x 1000 steps), 4 connections (points/s, higher is better)",
     f"{ci['points_per_s']:,.0f}", f"{mi['points_per_s']:,.0f}", f"{ci['points_per_s'] / mi['points_per_s']:.1f}x", ">= 30x"),
    ("(a') the same, 10 metrics x 100 steps per request (points/s)",
     f"{ci10['points_per_s']:,.0f}", f"{mi10['points_per_s']:,.0f}", f"{ci10['points_per_s'] / mi10['points_per_s']:.1f}x", ""),
    ("(b) full history of a 100,000-point metric, paged get-history (s, lower is better)",
     f"{ch['seconds_median']:.3f}", f"{mh['seconds_median']:.2f}", f"{mh['seconds_median'] / ch['seconds_median']:.1f}x", ">= 20x"),
    ("(c) get-history-bulk-interval, 320 points (ms, median)",
     f"{cb1m['ms_median']:.1f} (1,000,000 points)", f"{mb100k['ms_median']:.0f} (100,000 points)",
     f"{mb100k['ms_median'] / cb1m['ms_median']:.0f}x", "< 20 ms"),
    ("(c') get-history-bulk-interval, 320 points, same 100,000-point metric (ms, median)",
     f"{cb100k['ms_median']:.1f}", f"{mb100k['ms_median']:.0f}", f"{mb100k['ms_median'] / cb100k['ms_median']:.0f}x", ""),
]
print("| measure | Capstan | MLflow 3.17.2 | ratio | target |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print(f"ingest latency p50/p99 (ms): Capstan {ci['latency_ms_p50']:.1f}/{ci['latency_ms_p99']:.1f}, "
      f"MLflow {mi['latency_ms_p50']:.0f}/{mi['latency_ms_p99']:.0f}; "
      f"bulk-interval points returned: Capstan {cb1m['points_returned']}, MLflow {mb100k['points_returned']}")
EOF
