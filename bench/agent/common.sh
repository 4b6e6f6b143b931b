# Sourced by bench/agent/run.sh and order.sh: a work directory, two free ports and the cleanup
# of the server and agent they start (AGENT_SIGNAL: how the agent is stopped, TERM by default).
WORK="$(mktemp -d /tmp/capstan-agent-bench.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVER_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
SERVER_PID=""
AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "-${AGENT_SIGNAL:-TERM}" "$AGENT_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
