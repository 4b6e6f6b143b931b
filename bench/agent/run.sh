#!/usr/bin/env bash
# Benchmark of `capstan agent` (release build) sampling simulated GPUs: CPU time and peak
# resident memory of the agent process over a run, while Prometheus-style scrapes hit its
# /metrics every 5 s and it pushes batches to a real `capstan server`.
#
#   cargo build --release
#   bench/agent/run.sh [DURATION_S=600] [GPUS=8] [BIN=target/release/capstan]
#
# GPUS is a --simulate-gpus spec ("8", "64", "8xA100-40GB"), or "real" for the node's own GPUs
# through NVML.
# Reads /proc/<pid>/stat (utime + stime, in clock ticks) and /proc/<pid>/status (VmRSS every
# second, VmHWM = the kernel's peak) of the agent only; the server and the scraper are
# separate processes. CPU is counted from the first answered scrape (after start-up) to the
# end. Prints a summary and one JSON line. Targets (issue 6): under 1 % of one core, under
# 20 MB RSS; dcgm-exporter users report 70-250 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${1:-600}"
GPUS="${2:-8}"
BIN="${3:-target/release/capstan}"
SCRAPE_EVERY=5
[ -x "$BIN" ] || { echo "bench: $BIN is missing: cargo build --release" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl is missing (scripts/install-deps.sh)" >&2; exit 1; }

. bench/agent/common.sh

"$BIN" server --listen "127.0.0.1:$SERVER_PORT" --data-dir "$WORK/server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$SERVER_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

GPU_ARGS=(--simulate-gpus "$GPUS")
[ "$GPUS" = real ] && GPU_ARGS=()
RUST_LOG=warn "$BIN" --server "http://127.0.0.1:$SERVER_PORT" agent "${GPU_ARGS[@]}" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" --data-dir "$WORK/agent" --node-name bench-node \
    --sample-interval 1s >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
METRICS="http://127.0.0.1:$METRICS_PORT/metrics"
for _ in $(seq 1 100); do curl -fs "$METRICS" >/dev/null 2>&1 && break; sleep 0.1; done

TICKS="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$AGENT_PID/stat"; }
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$AGENT_PID/status"; }

START_TICKS="$(cpu_ticks)"
START_NS="$(date +%s%N)"
max_rss=0
scrapes=0
scrape_failures=0
last_scrape=0
end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "bench: the agent died:" >&2; cat "$WORK/agent.log" >&2; exit 1; }
    rss="$(status_kb VmRSS)"
    [ "$rss" -gt "$max_rss" ] && max_rss="$rss"
    now="$(date +%s)"
    if [ $(( now - last_scrape )) -ge "$SCRAPE_EVERY" ]; then
        last_scrape="$now"
        if curl -fs "$METRICS" -o "$WORK/last.prom"; then scrapes=$((scrapes + 1)); else scrape_failures=$((scrape_failures + 1)); fi
    fi
    sleep 1
done
END_TICKS="$(cpu_ticks)"
END_NS="$(date +%s%N)"
hwm="$(status_kb VmHWM)"
series="$(grep -c '^DCGM_FI_DEV_GPU_UTIL{' "$WORK/last.prom" || true)"
pushed="$(curl -fs "http://127.0.0.1:$SERVER_PORT/api/v1/nodes/bench-node" || echo '{}')"

# How much of the link-order file (cli/link/agent.order, bench/agent/order.sh) this binary
# still defines: a stale file leaves the agent's code scattered over the binary again.
ORDER_MATCH="$(nm --defined-only "$BIN" | awk 'NR == FNR { want[$1] = 1; n++; next }
    NF == 3 && ($3 in want) && !seen[$3]++ { m++ } END { printf "%d/%d", m, n }' cli/link/agent.order -)"

python3 - "$START_TICKS" "$END_TICKS" "$START_NS" "$END_NS" "$TICKS" "$max_rss" "$hwm" "$scrapes" "$scrape_failures" "$series" "$GPUS" "$pushed" "$ORDER_MATCH" <<'PY'
import json, sys
st, et, sn, en, hz, max_rss, hwm, scrapes, fails, series, gpus, pushed, order = sys.argv[1:]
cpu_s = (int(et) - int(st)) / int(hz)
wall_s = (int(en) - int(sn)) / 1e9
node = json.loads(pushed or "{}")
out = {
    "gpus": gpus, "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 2),
    "cpu_percent_of_one_core": round(100 * cpu_s / wall_s, 3),
    "max_rss_mib": round(int(max_rss) / 1024, 1), "peak_rss_vmhwm_mib": round(int(hwm) / 1024, 1),
    "scrapes": int(scrapes), "scrape_failures": int(fails), "gpu_util_series_in_last_scrape": int(series),
    "server_saw_gpus": node.get("gpus"), "dropped_samples": node.get("dropped_samples"),
    "link_order_symbols_found": order,
}
print(f"agent over {out['wall_s']} s, GPUs {gpus} at 1 s, /metrics every 5 s ({scrapes} scrapes, {fails} failed):")
print(f"  CPU {out['cpu_s']} s = {out['cpu_percent_of_one_core']} % of one core (target < 1 %)")
print(f"  RSS max {out['max_rss_mib']} MiB, peak (VmHWM) {out['peak_rss_vmhwm_mib']} MiB (target < 20 MB)")
print(f"  link order: {order} of cli/link/agent.order's functions are in this binary")
print(json.dumps(out))
PY
