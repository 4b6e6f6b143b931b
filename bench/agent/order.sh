#!/usr/bin/env bash
# Regenerates cli/link/agent.order: the functions `capstan agent` executes, which the release
# link (cli/build.rs) places together at the front of .text, so the agent maps a compact run
# of the 140 MB multi-command binary instead of pages scattered over all of it (see the agent
# section of BENCHMARKS.md).
#
#   cargo build --release
#   bench/agent/order.sh [BIN=target/release/capstan] [DURATION_S=90]
#
# Runs a `capstan server` and `capstan agent --simulate-gpus 8` pushing to it under valgrind's
# callgrind (every executed function is recorded, not a sample), scrapes /metrics every 5 s,
# then keeps the Rust symbols the binary defines, sorted. Symbol names carry crate hashes that
# stay put across source edits but move with dependency or compiler versions; names that no
# longer exist are skipped by the linker, so a stale file costs memory, never correctness.
# `bench/agent/run.sh` prints how much of the file the binary it measures still matches.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${1:-target/release/capstan}"
DURATION="${2:-90}"
OUT=cli/link/agent.order
[ -x "$BIN" ] || { echo "order: $BIN is missing: cargo build --release" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "order: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

AGENT_SIGNAL=INT
. bench/agent/common.sh

# The agent starts first, so its pushes fail and it logs the failures (the server-away path),
# then the server starts and the pushes go through.
RUST_LOG=warn valgrind --tool=callgrind --dump-instr=yes --demangle=no \
    --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" --server "http://127.0.0.1:$SERVER_PORT" agent --simulate-gpus 8 \
    --metrics-listen "127.0.0.1:$METRICS_PORT" --data-dir "$WORK/agent" --node-name order-node \
    --sample-interval 1s >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
end=$(( $(date +%s) + DURATION ))
server_at=$(( $(date +%s) + DURATION / 4 ))
scrapes=0
while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "order: the agent died:" >&2; cat "$WORK/agent.log" >&2; exit 1; }
    if [ -z "$SERVER_PID" ] && [ "$(date +%s)" -ge "$server_at" ]; then
        "$BIN" server --listen "127.0.0.1:$SERVER_PORT" --data-dir "$WORK/server" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
    fi
    curl -fs -m 4 "http://127.0.0.1:$METRICS_PORT/metrics" -o /dev/null && scrapes=$((scrapes + 1))
    sleep 5
done
[ "$scrapes" -gt 0 ] || { echo "order: /metrics never answered" >&2; cat "$WORK/agent.log" >&2; exit 1; }
grep -q 'order-node' <(curl -fs "http://127.0.0.1:$SERVER_PORT/api/v1/nodes") ||
    { echo "order: the server never saw the agent's pushes" >&2; cat "$WORK/agent.log" >&2; exit 1; }
# SIGINT: the agent shuts down cleanly, so its exit path is recorded too, and callgrind dumps.
kill -INT "$AGENT_PID"
wait "$AGENT_PID" || true
AGENT_PID=""

nm -n -S --defined-only "$BIN" >"$WORK/symbols"
python3 - "$WORK/callgrind.out" "$WORK/symbols" "$(basename "$BIN")" "$OUT" "$scrapes" <<'PY'
"""Every instruction address callgrind saw executed in the binary -> the function holding it."""
import bisect, re, sys
profile, symbols_path, binary, out, scrapes = sys.argv[1:]
functions = []  # (start, size, name) of the binary's code symbols, by address
for line in open(symbols_path):
    parts = line.split()
    if len(parts) == 4 and parts[2] in "tTwW":
        functions.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
starts = [f[0] for f in functions]
objects, in_binary, position, hot = {}, False, 0, set()
for line in open(profile):
    line = line.rstrip("\n")
    m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
    if m:
        kind, ident, name = m.groups()
        if name:
            objects[ident] = name
        if kind == "ob":
            in_binary = objects.get(ident, "").endswith("/" + binary)
        continue
    token = line.split(" ", 1)[0]
    if token.startswith("0x"):
        position = int(token, 16)
    elif token[:1] in "+-" and token[1:].isdigit():
        position += int(token)
    elif token != "*":
        continue  # a name, calls= or header line; positions follow "calls=" lines too
    if in_binary:
        i = bisect.bisect_right(starts, position) - 1
        if i >= 0 and position < functions[i][0] + max(functions[i][1], 1):
            hot.add(functions[i][2])
if len(hot) < 500:
    sys.exit(f"order: only {len(hot)} functions recorded; is the profile of {binary}?")
with open(out, "w") as f:
    f.write("\n".join(sorted(hot)) + "\n")
print(f"order: {len(hot)} functions executed by the agent ({scrapes} scrapes) -> {out}")
PY
