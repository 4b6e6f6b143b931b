#!/usr/bin/env bash
# Serving benchmark: the same ONNX model (bench/serving: a 64-256-256-10 MLP, one row per
# request, JSON) served by Capstan's model server and by KServe's Python model server (the
# `kserve` package wrapping onnxruntime), side by side in one run on this machine:
#   p50 / p99 latency at concurrency 1, throughput at concurrency 16,
# plus each runtime's model run in process (tract for Capstan, onnxruntime for KServe) for the
# overhead figure (server p50 minus in-process p50).
#
#   bench/serving/run.sh [SECONDS=10]
#
# Builds `serving-load` in release (its own target dir: no lock on the shared one). Its
# `serve` subcommand runs capstan_serving::server::serve, the server `capstan serve` runs (same
# routes, decoding, batching, metrics), without the object-store source it does not need here.
# Each server is warmed up 1 s and measured alone (the other is stopped). Prints one JSON line.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN="${1:-10}"
TARGET="${SERVING_BENCH_TARGET:-$HOME/.cache/capstan/serving-bench-target}"
CARGO_TARGET_DIR="$TARGET" cargo build --quiet --release -p capstan-bench-serving
LOAD="$TARGET/release/serving-load"
python3 -c "import kserve, onnxruntime, onnx" 2>/dev/null ||
    { echo "bench: python3 with kserve, onnxruntime and onnx is needed (scripts/install-deps.sh)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/capstan-serving-bench.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: $1 never became ready" >&2
    exit 1
}

MODEL="$WORK/mlp.onnx"
python3 tests/e2e/python/onnx_models.py mlp "$MODEL"
python3 - "$WORK/body.json" <<'EOF'
import json, sys
import numpy as np
x = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
json.dump({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}, open(sys.argv[1], "w"))
EOF

run_load() { # URL CONCURRENCY
    "$LOAD" http --url "$1" --body "$WORK/body.json" --concurrency "$2" --seconds "$SECONDS_PER_RUN"
}

# In process.
TRACT=$("$LOAD" tract --model "$MODEL" --body "$WORK/body.json" --iterations 20000)
ORT=$(python3 bench/serving/inprocess.py "$MODEL" "$WORK/body.json" 20000)

# Capstan.
PORT=$(free_port)
"$LOAD" serve --model "$MODEL" --name mlp --listen "127.0.0.1:$PORT" >"$WORK/capstan.log" 2>&1 &
PIDS+=($!)
CAPSTAN_PID=$!
wait_ready "http://127.0.0.1:$PORT/v2/health/ready"
C1=$(run_load "http://127.0.0.1:$PORT/v2/models/mlp/infer" 1)
C16=$(run_load "http://127.0.0.1:$PORT/v2/models/mlp/infer" 16)
kill "$CAPSTAN_PID"; wait "$CAPSTAN_PID" 2>/dev/null || true

# KServe.
PORT=$(free_port)
python3 bench/serving/kserve_server.py --model "$MODEL" --name mlp --port "$PORT" >"$WORK/kserve.log" 2>&1 &
PIDS+=($!)
KSERVE_PID=$!
wait_ready "http://127.0.0.1:$PORT/v2/models/mlp/ready"
K1=$(run_load "http://127.0.0.1:$PORT/v2/models/mlp/infer" 1)
K16=$(run_load "http://127.0.0.1:$PORT/v2/models/mlp/infer" 16)
kill "$KSERVE_PID"; wait "$KSERVE_PID" 2>/dev/null || true

python3 - "$TRACT" "$ORT" "$C1" "$C16" "$K1" "$K16" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, sys
tract, ort, c1, c16, k1, k16 = (json.loads(a) for a in sys.argv[1:7])
out = {
    "machine": {"cores": int(sys.argv[7]), "loadavg": sys.argv[8]},
    "inprocess": {"tract_p50_ms": tract["p50_ms"], "onnxruntime_p50_ms": ort["p50_ms"]},
    "capstan": {"c1_p50_ms": c1["p50_ms"], "c1_p99_ms": c1["p99_ms"], "c16_rps": c16["throughput_rps"],
                "c16_p50_ms": c16["p50_ms"], "c16_p99_ms": c16["p99_ms"], "errors": c1["errors"] + c16["errors"],
                "overhead_p50_ms": c1["p50_ms"] - tract["p50_ms"]},
    "kserve": {"c1_p50_ms": k1["p50_ms"], "c1_p99_ms": k1["p99_ms"], "c16_rps": k16["throughput_rps"],
               "c16_p50_ms": k16["p50_ms"], "c16_p99_ms": k16["p99_ms"], "errors": k1["errors"] + k16["errors"],
               "overhead_p50_ms": k1["p50_ms"] - ort["p50_ms"]},
}
out["ratios"] = {
    "throughput_c16": out["capstan"]["c16_rps"] / out["kserve"]["c16_rps"],
    "p50_c1": out["kserve"]["c1_p50_ms"] / out["capstan"]["c1_p50_ms"],
    "p99_c1": out["kserve"]["c1_p99_ms"] / out["capstan"]["c1_p99_ms"],
}
print(json.dumps(out))
EOF
