#!/usr/bin/env bash
# Starts the PostgreSQL server the test suite talks to, and prints the line to eval:
#
#   eval "$(scripts/postgres-setup.sh [STATE_DIR])"
#   # -> export CAPSTAN_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:55432/capstan_test
#
# - installs Debian's `postgresql` when its binaries are missing (apt-get, needs root or sudo);
# - uses Debian's binaries explicitly (/usr/lib/postgresql/<version>/bin), never whatever
#   `postgres` comes first on PATH;
# - initializes a cluster in STATE_DIR/data (once), owned by the user the server runs as:
#   the `postgres` user when run as root (initdb and postgres refuse root), else yourself;
# - starts it on 127.0.0.1:$CAPSTAN_POSTGRES_PORT (default 55432), with its unix socket and
#   log in STATE_DIR, trust auth for local connections only (a test cluster: nothing beyond
#   loopback can connect);
# - creates the database `capstan_test` (tests create one fresh database each beside it);
# - waits (bounded) until it accepts connections.
# Idempotent: a cluster already running is reused, in well under a second.
#
# STATE_DIR defaults to $CAPSTAN_POSTGRES_STATE, else /var/lib/postgresql/capstan-test when run
# as root (the server user must be able to reach it; /root is private), else
# ${XDG_CACHE_HOME:-~/.cache}/capstan/test-services/postgres.
# Everything but the export line goes to stderr.
set -euo pipefail

log() { echo "postgres-setup: $*" >&2; }
die() {
    echo "postgres-setup: error: $*" >&2
    exit 1
}

PORT="${CAPSTAN_POSTGRES_PORT:-55432}"
DB="capstan_test"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ "$(id -u)" = 0 ]; then
    DEFAULT_STATE=/var/lib/postgresql/capstan-test
else
    DEFAULT_STATE="${XDG_CACHE_HOME:-$HOME/.cache}/capstan/test-services/postgres"
fi
STATE="${1:-${CAPSTAN_POSTGRES_STATE:-$DEFAULT_STATE}}"

# Debian's binaries, newest version installed.
find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}
if ! PGBIN="$(find_bin)"; then
    log "apt-get install postgresql"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq postgresql >&2
    PGBIN="$(find_bin)" || die "apt-get installed postgresql, but /usr/lib/postgresql/*/bin/initdb is missing"
fi
for tool in psql pg_isready; do
    command -v "$tool" >/dev/null || [ -x "$PGBIN/$tool" ] || die "$tool is missing (package postgresql-client)"
done
PSQL="$PGBIN/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)"
PG_ISREADY="$PGBIN/pg_isready"
[ -x "$PG_ISREADY" ] || PG_ISREADY="$(command -v pg_isready)"

# The user the server runs as, and how to run a command as that user.
if [ "$(id -u)" = 0 ]; then
    RUN_USER=postgres
    id "$RUN_USER" >/dev/null 2>&1 || die "user '$RUN_USER' is missing (the postgresql package creates it)"
    as_server_user() { runuser -u "$RUN_USER" -- "$@"; }
else
    RUN_USER="$(id -un)"
    as_server_user() { "$@"; }
fi

DATA="$STATE/data"
SOCKET_DIR="$STATE/socket"
LOGFILE="$STATE/postgres.log"
mkdir -p "$STATE"
if [ "$(id -u)" = 0 ]; then chown "$RUN_USER": "$STATE"; fi
as_server_user test -w "$STATE" ||
    die "$STATE is not writable by user '$RUN_USER' (pick a STATE_DIR that user can reach)"
as_server_user mkdir -p "$SOCKET_DIR"

URL="postgres://postgres@127.0.0.1:$PORT/$DB"
ready() { "$PG_ISREADY" -q -h "$SOCKET_DIR" -p "$PORT" -U postgres >/dev/null 2>&1; }
psql_admin() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres "$@"; }

if ! ready; then
    if [ ! -f "$DATA/PG_VERSION" ]; then
        log "initdb $DATA ($PGBIN, as $RUN_USER)"
        as_server_user "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$STATE/initdb.log" 2>&1 || die "initdb failed:
$(cat "$STATE/initdb.log")"
    fi
    # A stale pid file from a killed server is handled by pg_ctl itself; one from a server
    # that still runs elsewhere on another port is reported by pg_ctl start.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "port $PORT is taken by something else than this cluster; set CAPSTAN_POSTGRES_PORT"
    fi
    log "starting PostgreSQL on 127.0.0.1:$PORT (socket in $SOCKET_DIR, log $LOGFILE)"
    as_server_user "$PGBIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 \
        -o "-p $PORT -k $SOCKET_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
        start >&2 || die "pg_ctl start failed; its log:
$(tail -n 30 "$LOGFILE" 2>/dev/null)"
    for _ in $(seq 1 300); do
        ready && break
        sleep 0.1
    done
    ready || die "PostgreSQL did not accept connections within 30 s; its log:
$(tail -n 30 "$LOGFILE" 2>/dev/null)"
fi

if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    log "createdb $DB"
    psql_admin -c "CREATE DATABASE $DB" >&2
fi
log "ok: $URL"
echo "export CAPSTAN_TEST_POSTGRES_URL=$URL"
