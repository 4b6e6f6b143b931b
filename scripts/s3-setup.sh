#!/usr/bin/env bash
# Starts a local S3-compatible server (moto) for Capstan's artifact tests (and CI).
#
#   scripts/s3-setup.sh STATE_DIR
#   eval "$(scripts/s3-setup.sh /tmp/capstan-s3)"
#
# - installs moto[server] with pip when `moto_server` is missing;
# - starts `moto_server` on a free port of 127.0.0.1 (setsid, pid file STATE_DIR/moto.pid,
#   log STATE_DIR/moto.log, port in STATE_DIR/moto.port) unless the one it started before
#   still answers, and waits until it does;
# - creates the bucket $CAPSTAN_TEST_S3_BUCKET (default capstan-test) when missing;
# - prints `export AWS_ENDPOINT_URL=...`, dummy credentials, the region and
#   `export CAPSTAN_TEST_S3_BUCKET=...` for eval.
# Idempotent; everything but the export lines goes to stderr.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd)
BUCKET="${CAPSTAN_TEST_S3_BUCKET:-capstan-test}"
MOTO_VERSION="${MOTO_VERSION:-5.2.1}"
PYTHON="${PYTHON:-python3}"

log() { echo "s3-setup: $*" >&2; }

# 1. moto's server
if ! command -v moto_server >/dev/null || ! "$PYTHON" -c "import moto.server, flask_cors" 2>/dev/null; then
    log "pip install moto[server]==$MOTO_VERSION"
    "$PYTHON" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
MOTO_SERVER=$(command -v moto_server || true)
if [ -z "$MOTO_SERVER" ]; then
    log "ERROR: moto_server is not on PATH after installing moto[server]"
    exit 1
fi

# 2. the server
answers() {
    [ -n "${PORT:-}" ] && curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/moto-api/"
}
PORT=""
if [ -f "$STATE_DIR/moto.port" ]; then
    PORT=$(cat "$STATE_DIR/moto.port")
fi
if ! answers; then
    if [ -f "$STATE_DIR/moto.pid" ]; then
        OLD=$(cat "$STATE_DIR/moto.pid")
        if [ -n "$OLD" ] && kill -0 "$OLD" 2>/dev/null \
            && tr '\0' ' ' <"/proc/$OLD/cmdline" 2>/dev/null | grep -q moto_server; then
            log "moto_server pid $OLD does not answer; stopping it"
            kill "$OLD" 2>/dev/null || true
            sleep 1
        fi
    fi
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log "starting moto_server on 127.0.0.1:$PORT (log $STATE_DIR/moto.log)"
    setsid nohup "$MOTO_SERVER" -H 127.0.0.1 -p "$PORT" </dev/null >>"$STATE_DIR/moto.log" 2>&1 &
    echo $! >"$STATE_DIR/moto.pid"
    echo "$PORT" >"$STATE_DIR/moto.port"
    for _ in $(seq 1 60); do
        if answers; then
            break
        fi
        sleep 0.5
    done
    if ! answers; then
        log "ERROR: moto_server did not answer on 127.0.0.1:$PORT within 30 s; its log:"
        tail -n 30 "$STATE_DIR/moto.log" >&2 || true
        exit 1
    fi
fi
ENDPOINT="http://127.0.0.1:$PORT"
log "moto_server answers at $ENDPOINT"

# 3. the bucket (moto does not check signatures: a plain PUT creates it)
if ! curl -sf --max-time 5 -o /dev/null -I "$ENDPOINT/$BUCKET"; then
    log "creating bucket $BUCKET"
    curl -sf --max-time 10 -o /dev/null -X PUT "$ENDPOINT/$BUCKET"
fi

echo "export AWS_ENDPOINT_URL=$ENDPOINT"
echo "export AWS_ACCESS_KEY_ID=testing"
echo "export AWS_SECRET_ACCESS_KEY=testing"
echo "export AWS_DEFAULT_REGION=us-east-1"
echo "export CAPSTAN_TEST_S3_BUCKET=$BUCKET"
