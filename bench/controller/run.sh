#!/usr/bin/env bash
# Benchmark of the Kubernetes controller on the test control plane (tests/cluster/: real
# etcd + kube-apiserver 1.34 + kwok), NODES kwok nodes x 8 GPUs, JOBS TrainingJobs of 4
# replicas created while the controller is stopped, then the controller started: the burst
# of "applied at once". Prints one JSON line per scenario:
#   burst: replicas ask 1 CPU and no GPU, so every gang fits at once: seconds until every
#          pod is bound (created with its nodeName), pods bound per second;
#   gpu:   replicas ask 1 GPU (4,000 GPUs asked of 800): gangs go through in waves, each
#          replica exits 0 after RUN (kwok), seconds until every pod was bound and until
#          every job Succeeded.
# and the controller's CPU seconds and peak RSS (VmHWM) for each.
#
#   bench/controller/run.sh                     # NODES=100 JOBS=1000, target/release/capstan
#   CAPSTAN_BIN=target/debug/capstan bench/controller/run.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NODES="${NODES:-100}"
JOBS="${JOBS:-1000}"
RUN="${RUN:-2s}"
BIN="${CAPSTAN_BIN:-$ROOT/target/release/capstan}"
DIR="${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan/bench-cluster-$NODES}"
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release (or set CAPSTAN_BIN)" >&2; exit 1; }
eval "$(NODES=$NODES "$ROOT/tests/cluster/up.sh" "$DIR")"
K="$DIR/bin/kubectl"
"$K" apply --server-side --force-conflicts -f "$ROOT/helm/capstan/crds" >/dev/null
"$K" wait --for condition=established --timeout=60s crd/trainingjobs.capstan.dev >/dev/null

metric() { # port name -> value (0 if absent)
    { curl -s "http://127.0.0.1:$1/metrics" || true; } | awk -v m="$2" '$1 == m { print $2; found=1 } END { if (!found) print 0 }'
}
now() { date +%s.%N; }
metric_file() { awk -v m="$2" '$1 == m { print $2; found=1 } END { if (!found) print 0 }' "$1"; }

scenario() { # name gpus exit-annotations
    local name=$1 gpus=$2 ann=$3 ns="bench-$1"
    # Leftovers of an interrupted run: their finalizers need a controller; drop them.
    "$K" get trainingjobs -n "$ns" -o name 2>/dev/null | xargs -r -n 100 "$K" patch -n "$ns" --type=merge \
        -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    "$K" delete namespace "$ns" --wait=true --timeout=300s >/dev/null 2>&1 || true
    "$K" create namespace "$ns" >/dev/null
    python3 - "$JOBS" "$gpus" "$ann" > "$DIR/$ns.yaml" <<'PY'
import sys
jobs, gpus, ann = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for i in range(jobs):
    print(f"""---
apiVersion: capstan.dev/v1alpha1
kind: TrainingJob
metadata:
  name: job-{i:04d}
  annotations: {{{ann}}}
spec:
  image: trainer:1
  replicas: 4
  gpusPerReplica: {gpus}
  resources: {{cpu: "1"}}
  command: ["python", "train.py"]""")
PY
    "$K" create -n "$ns" -f "$DIR/$ns.yaml" >/dev/null
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local want=$((JOBS * 4)) t0 t_bound="" t_done="" pid
    t0=$(now)
    RUST_LOG="${CONTROLLER_LOG:-info}" "$BIN" controller --kubeconfig "$DIR/kubeconfig" --watch-namespace "$ns" \
        --leader-election-namespace default --leader-election-lease "lease-$ns" --metrics-listen "127.0.0.1:$port" >"$DIR/$ns-controller.log" 2>&1 &
    pid=$!
    while :; do
        local created succeeded
        created=$(metric "$port" capstan_controller_pods_created_total)
        succeeded=$(metric "$port" 'capstan_controller_jobs{phase="Succeeded"}')
        if [ -z "$t_bound" ] && [ "${created%.*}" -ge "$want" ]; then t_bound=$(now); fi
        if [ -z "$ann" ] && [ -n "$t_bound" ]; then break; fi
        if [ -n "$ann" ] && [ "${succeeded%.*}" -ge "$JOBS" ]; then t_done=$(now); break; fi
        kill -0 $pid 2>/dev/null || { tail -20 "$DIR/$ns-controller.log" >&2; exit 1; }
        if python3 -c "import sys; sys.exit(0 if $(now) - $t0 > 900 else 1)"; then
            echo "timed out: $created pods created, $succeeded jobs succeeded" >&2; tail -20 "$DIR/$ns-controller.log" >&2; kill $pid; exit 1
        fi
        sleep 0.2
    done
    { curl -s "http://127.0.0.1:$port/metrics" || true; } > "$DIR/$ns-metrics.txt"
    local bound_pods cpu rss
    bound_pods=$("$K" get pods -n "$ns" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c . || true)
    cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$pid/stat")
    rss=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
    python3 - <<PY
import json
t0, tb = $t0, $t_bound
td = ${t_done:-None}
out = {"scenario": "$name", "nodes": $NODES, "gpus": $NODES * 8, "jobs": $JOBS, "replicas": 4, "gpus_per_replica": $gpus,
       "pods": $want, "pods_seen_bound_at_end": $bound_pods,
       "seconds_until_all_pods_bound": round(tb - t0, 2), "pods_bound_per_second": round($want / (tb - t0), 1),
       "controller_cpu_seconds": $cpu, "passes": $(metric_file "$DIR/$ns-metrics.txt" 'capstan_controller_pass_duration_seconds_count'),
       "pass_seconds_total": $(metric_file "$DIR/$ns-metrics.txt" 'capstan_controller_pass_duration_seconds_sum'), "controller_peak_rss_mib": $rss, "binary": "$BIN"}
if td is not None:
    out["seconds_until_all_jobs_succeeded"] = round(td - t0, 2)
print(json.dumps(out), flush=True)
PY
    # Delete while the controller runs: it removes its finalizers once the pods are gone.
    "$K" delete namespace "$ns" --wait=true --timeout=600s >/dev/null
    kill $pid; wait $pid 2>/dev/null || true
}

SCENARIOS="${SCENARIOS:-burst gpu}"
case " $SCENARIOS " in *" burst "*) scenario burst 0 "" ;; esac
case " $SCENARIOS " in *" gpu "*) scenario gpu 1 "kwok.capstan.dev/exit-code: \"0\", kwok.capstan.dev/run-duration: \"$RUN\"" ;; esac
