#!/usr/bin/env bash
# Measures `capstan up`: time from exec to the first /healthz 200, and resident memory
# once idle. Usage: scripts/bench-startup.sh [BINARY] [RUNS]
# (default target/release/capstan, 10 runs; build it with `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/capstan}"
RUNS="${2:-10}"
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
times=()
for i in $(seq 1 "$RUNS"); do
    DIR=$(mktemp -d)
    # A fresh data dir on the first run measures first start (migrations); later runs reuse it.
    [ "$i" = 1 ] && FIRST_DIR="$DIR"
    D="${FIRST_DIR}"
    start=$(date +%s%N)
    "$BIN" up --listen "127.0.0.1:$PORT" --data-dir "$D/data" >"$DIR/log" 2>&1 &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.002; done
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
    if [ "$i" = "$RUNS" ]; then
        sleep 10   # idle: controller ticking, no jobs
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    fi
    kill -TERM "$pid"; wait "$pid" || true
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
max=$(echo "$sorted" | tail -1)
first=${times[0]}
echo "{\"runs\": $RUNS, \"first_start_ms\": $first, \"median_start_ms\": $median, \"max_start_ms\": $max, \"idle_rss_kib\": $rss, \"peak_rss_kib\": $hwm}"
