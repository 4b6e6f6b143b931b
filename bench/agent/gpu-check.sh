#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU (issue 6), for when one is at hand:
#
#   cargo build --release
#   bench/agent/gpu-check.sh [BIN=target/release/capstan] [OUT_DIR=/tmp/capstan-gpu-check]
#
# 1. `capstan up` (server, standalone controller, local agent through NVML; no simulated GPUs)
#    on loopback; /metrics scraped idle.
# 2. A TrainingJob (process runtime, 1 GPU) running a PyTorch bf16 matmul loop; while it runs,
#    /metrics is scraped next to `nvidia-smi --query-gpu` read at the same moment.
# 3. The job's tracking run read back through the MLflow REST API: system/gpu_* metrics.
# 4. bench/agent/run.sh over the real GPUs (agent CPU and peak RSS with NVML), while the
#    matmul still runs.
# Everything lands in OUT_DIR (log.txt, the scrapes, the run). Needs python3 with torch and
# CUDA, curl, nvidia-smi.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN="$(realpath "${1:-target/release/capstan}")"
OUT_DIR="${2:-${OUT:-/tmp/capstan-gpu-check}}"
BENCH_S="${BENCH_S:-120}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/log.txt") 2>&1
W="$(mktemp -d /tmp/capstan-gpu-check.XXXXXX)"
PORT=18080
URL="http://127.0.0.1:$PORT"
UP_PID=""
cleanup() {
    [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null
    sleep 2
    cp "$W/up.log" "$OUT_DIR/up.log" 2>/dev/null
    find "$W/up" -name '*.log' -path '*gpu-matmul*' -exec cp {} "$OUT_DIR/job-replica.log" \; 2>/dev/null
    true
}
trap cleanup EXIT
step() { echo; echo "=== $(date -u +%H:%M:%S) $*"; }

step "machine"
nvidia-smi -L
nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
"$BIN" --version

step "capstan up (agent through NVML)"
RUST_LOG=info "$BIN" up --listen "127.0.0.1:$PORT" --data-dir "$W/up" >"$W/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 150); do curl -fs "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
sleep 3
grep -i "nvml\|gpu" "$W/up.log" | head -20
curl -fs "$URL/metrics" >"$OUT_DIR/idle.prom"
echo "idle scrape: $(grep -c '^DCGM_' "$OUT_DIR/idle.prom") DCGM lines"
grep -E '^DCGM_FI_DEV_(GPU_UTIL|FB_USED|GPU_TEMP|POWER_USAGE)\{' "$OUT_DIR/idle.prom"
curl -fs "$URL/api/v1/nodes" | tee "$OUT_DIR/nodes.json" | head -c 1500; echo

step "TrainingJob on the GPU: a bf16 matmul loop"
cat >"$W/matmul.py" <<'PY'
import os, time, torch
print("CUDA_VISIBLE_DEVICES =", os.environ.get("CUDA_VISIBLE_DEVICES"), "device", torch.cuda.get_device_name(0), flush=True)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
hold = torch.empty(int(20 * 2**30) // 2, device="cuda", dtype=torch.bfloat16)  # 20 GiB held
end = time.time() + float(os.environ.get("SECONDS_TO_RUN", "170"))
n = 0
while time.time() < end:
    for _ in range(50):
        c = a @ b
    torch.cuda.synchronize()
    n += 50
    if n % 5000 == 0:
        print("matmuls", n, flush=True)
print("done", n, flush=True)
PY
cat >"$W/job.yaml" <<YAML
apiVersion: capstan.dev/v1alpha1
kind: TrainingJob
metadata:
  name: gpu-matmul
spec:
  runtime: process
  replicas: 1
  gpusPerReplica: 1
  experiment: gpu-check
  command: ["python3", "$W/matmul.py"]
YAML
"$BIN" --server "$URL" apply -f "$W/job.yaml"
JOB="$URL/apis/capstan.dev/v1alpha1/namespaces/default/trainingjobs/gpu-matmul"
for _ in $(seq 1 60); do
    phase="$(curl -fs "$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("phase",""))')"
    [ "$phase" = Running ] && break
    sleep 1
done
echo "job phase: $phase"
sleep 20
for i in 1 2 3; do
    curl -fs "$URL/metrics" >"$OUT_DIR/load.prom"
    echo "--- scrape $i, with nvidia-smi at the same moment:"
    nvidia-smi --query-gpu=name,utilization.gpu,memory.used,temperature.gpu,power.draw,clocks.sm --format=csv,noheader
    grep -E '^DCGM_FI_DEV_(GPU_UTIL|FB_USED|FB_FREE|GPU_TEMP|POWER_USAGE|SM_CLOCK|MEM_COPY_UTIL)\{' "$OUT_DIR/load.prom"
    sleep 5
done
grep -E '^DCGM_' "$OUT_DIR/load.prom" | cut -d'{' -f1 | sort -u | tr '\n' ' '; echo
curl -fs "$JOB" >"$OUT_DIR/job.json"
python3 -c 'import json; j=json.load(open("'"$OUT_DIR/job.json"'")); print(json.dumps(j.get("status"), indent=1)[:1500])'
RUN_ID="$(python3 -c 'import json; print(json.load(open("'"$OUT_DIR/job.json"'"))["status"].get("trackingRunId",""))')"

step "the job's run through the MLflow REST API"
curl -fs "$URL/api/2.0/mlflow/runs/get?run_id=$RUN_ID" >"$OUT_DIR/run.json"
python3 - "$OUT_DIR/run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["run"]
ms = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
for k in sorted(ms):
    if k.startswith("system/gpu"):
        print(f"  {k} = {ms[k]}")
print("tags:", {t["key"]: t["value"] for t in run["data"].get("tags", []) if "capstan" in t["key"]})
PY
KEY=system/gpu_0_utilization_percentage
curl -fs "$URL/api/2.0/mlflow/metrics/get-history?run_id=$RUN_ID&metric_key=$KEY" \
    | python3 -c 'import json,sys; h=json.load(sys.stdin).get("metrics",[]); print(len(h), "points of", "'$KEY'", [m["value"] for m in h][-10:])'

step "agent CPU and RSS over ${BENCH_S} s with NVML"
bench/agent/run.sh "$BENCH_S" real "$BIN" | tee "$OUT_DIR/agent-bench.txt"

step "end"
curl -fs "$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"].get("phase"))'
