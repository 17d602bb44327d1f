#!/usr/bin/env bash
# deploy/run.sh — what `make run` does (the contract: docs API.md §1).
#
#   1. load ./.env if present (a variable already set in the environment wins);
#   2. if a Redis answers on DEX_REDIS_URL (default redis://127.0.0.1:6379/0), use it and leave it
#      alone; otherwise start redis-server on that host:port (AOF on, data and redis.log in
#      DEX_REDIS_DIR, default var/redis/) and wait until it answers;
#   3. run every process of the Procfile (DEX_PROCFILE, default deploy/Procfile) under honcho in
#      the foreground, logs prefixed by process name;
#   4. on Ctrl-C / SIGTERM / SIGHUP, or when honcho exits (one process died), stop all of them and
#      the Redis this script started (only that one), wait for them, and exit.
#
# Works from any directory. Needs `make setup` to have run (for .venv/bin/honcho).

set -uo pipefail   # no `set -e`: every failure path is handled explicitly, cleanup always runs

ORIG_PWD=$PWD
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P) || exit 1
cd "$ROOT" || exit 1

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- environment ------------------------------------------------------------------------------
# .env: KEY=VALUE lines (optional `export `, optional quotes, # comments). Not `source`d, so a
# value is never executed, and the caller's environment takes precedence (as pydantic-settings).
load_env_file() {
    local line key val
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        line=${line#"${line%%[![:space:]]*}"}
        [[ -z $line || $line == '#'* ]] && continue
        line=${line#export }
        [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        val=${BASH_REMATCH[2]}
        if [[ $val =~ ^\"(.*)\"[[:space:]]*$ || $val =~ ^\'(.*)\'[[:space:]]*$ ]]; then
            val=${BASH_REMATCH[1]}
        else
            val=${val%%[[:space:]]#*}                      # trailing " # comment"
            val=${val%"${val##*[![:space:]]}"}             # trailing blanks
        fi
        [[ -n ${!key+set} ]] && continue
        export "$key=$val"
    done < "$1"
}
[[ -f $ROOT/.env ]] && load_env_file "$ROOT/.env"

export DEX_REDIS_URL=${DEX_REDIS_URL:-redis://127.0.0.1:6379/0}
export PYTHONUNBUFFERED=${PYTHONUNBUFFERED:-1}   # honcho pipes stdout: don't let Python buffer it

PROCFILE=${DEX_PROCFILE:-deploy/Procfile}
if [[ $PROCFILE != /* ]]; then
    if [[ -f $ORIG_PWD/$PROCFILE ]]; then PROCFILE=$ORIG_PWD/$PROCFILE; else PROCFILE=$ROOT/$PROCFILE; fi
fi
[[ -f $PROCFILE ]] || die "no Procfile at $PROCFILE"

HONCHO=$ROOT/.venv/bin/honcho
PY=$ROOT/.venv/bin/python
[[ -x $HONCHO && -x $PY ]] || die "$ROOT/.venv is not set up: run 'make setup' (or 'make run') first"
command -v redis-cli >/dev/null 2>&1 \
    || die "redis-cli not found: install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or run 'make setup' as root"

mkdir -p "$ROOT/var" || die "cannot create $ROOT/var"

# --- Redis ------------------------------------------------------------------------------------
mapfile -t URL_PARTS < <("$PY" -c '
import sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
print(u.scheme)
print(u.hostname or "127.0.0.1")
print(u.port or 6379)
print(unquote(u.password or ""))
' "$DEX_REDIS_URL" 2>/dev/null)
(( ${#URL_PARTS[@]} >= 3 )) || die "cannot parse DEX_REDIS_URL='$DEX_REDIS_URL'"
R_SCHEME=${URL_PARTS[0]}
R_HOST=${URL_PARTS[1]}
R_PORT=${URL_PARTS[2]}
R_PASS=${URL_PARTS[3]:-}

CLI_TLS=()
[[ $R_SCHEME == rediss ]] && CLI_TLS=(--tls)
TIMEOUT=()
command -v timeout >/dev/null 2>&1 && TIMEOUT=(timeout 3)

redis_answers() {
    local reply
    reply=$("${TIMEOUT[@]}" redis-cli "${CLI_TLS[@]}" -u "$DEX_REDIS_URL" ping 2>/dev/null) || return 1
    [[ $reply == PONG ]]
}

REDIS_PID=""
HONCHO_PID=""
CLEANED=0

# Poll until process $1 is gone (bash reaps its children, so kill -0 fails once it exited).
wait_gone() {
    local pid=$1 tenths=$(( $2 * 10 ))
    while (( tenths-- > 0 )); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

stop_pid() {   # stop_pid PID NAME TIMEOUT_S: SIGTERM, wait, SIGKILL if needed, reap
    local pid=$1 name=$2 secs=$3
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        if ! wait_gone "$pid" "$secs"; then
            log "$name (pid $pid) did not stop within ${secs}s: killing it"
            kill -KILL "$pid" 2>/dev/null
            wait_gone "$pid" 5
        fi
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    (( CLEANED )) && return 0
    CLEANED=1
    trap '' INT TERM HUP   # a second Ctrl-C must not interrupt the shutdown half-way
    if [[ -n $HONCHO_PID ]]; then
        kill -0 "$HONCHO_PID" 2>/dev/null && log "stopping the processes"
        # honcho SIGTERMs every process group, SIGKILLs the rest after 5 s, then exits
        stop_pid "$HONCHO_PID" honcho 20
    fi
    if [[ -n $REDIS_PID ]]; then
        log "stopping the Redis this script started (pid $REDIS_PID)"
        stop_pid "$REDIS_PID" redis-server 15   # SIGTERM: redis fsyncs the AOF and exits
    fi
    return 0
}

on_signal() {   # on_signal NAME EXIT_CODE
    log "$1 received: shutting down"
    cleanup
    exit "$2"
}

trap cleanup EXIT
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGHUP 129' HUP

if redis_answers; then
    log "Redis already answers on $R_HOST:$R_PORT: using it (and leaving it running)"
else
    [[ $R_SCHEME == redis ]] \
        || die "nothing answers on DEX_REDIS_URL=$DEX_REDIS_URL and a local Redis can only be started for a redis:// URL"
    command -v redis-server >/dev/null 2>&1 \
        || die "redis-server not found: install Redis (Debian/Ubuntu: apt-get install redis-server) or run 'make setup' as root"
    REDIS_DIR=${DEX_REDIS_DIR:-var/redis}
    [[ $REDIS_DIR == /* ]] || REDIS_DIR=$ROOT/$REDIS_DIR
    mkdir -p "$REDIS_DIR" || die "cannot create $REDIS_DIR"
    bind=$R_HOST
    [[ $bind == localhost ]] && bind=127.0.0.1
    # AOF is the one copy on disk: no RDB snapshots besides it (each forks and writes the whole
    # dataset), and the AOF is rewritten once it reaches 512 MB rather than 64 MB: at 1,500
    # orders/s it grows ~7 MB/s, and a rewrite every few seconds took a core each time.
    redis_args=(--port "$R_PORT" --bind "$bind" --appendonly yes --save ""
                --auto-aof-rewrite-min-size 512mb --dir "$REDIS_DIR" --daemonize no)
    [[ -n $R_PASS ]] && redis_args+=(--requirepass "$R_PASS")
    log "starting redis-server on $bind:$R_PORT (AOF on, data and log in ${REDIS_DIR#"$ROOT"/})"
    # Own session: a Ctrl-C on the terminal must not reach Redis before the services are down.
    if command -v setsid >/dev/null 2>&1; then
        setsid redis-server "${redis_args[@]}" >>"$REDIS_DIR/redis.log" 2>&1 </dev/null &
    else
        redis-server "${redis_args[@]}" >>"$REDIS_DIR/redis.log" 2>&1 </dev/null &
    fi
    REDIS_PID=$!
    tries=100   # ~10 s
    until redis_answers; do
        if ! kill -0 "$REDIS_PID" 2>/dev/null; then
            wait "$REDIS_PID" 2>/dev/null
            REDIS_PID=""
            log "redis-server exited at once; the end of $REDIS_DIR/redis.log:"
            tail -n 15 "$REDIS_DIR/redis.log" >&2
            die "could not start Redis on $bind:$R_PORT"
        fi
        (( --tries > 0 )) || die "redis-server (pid $REDIS_PID) did not answer PING on $bind:$R_PORT within 10 s (see $REDIS_DIR/redis.log)"
        sleep 0.1
    done
    log "Redis is up (pid $REDIS_PID)"
fi

# --- the processes ----------------------------------------------------------------------------
# `-e /dev/null`: .env was already applied above (with the environment taking precedence);
# honcho's own .env loading would override the environment instead.
log "starting $(grep -cE '^[A-Za-z0-9_-]+:' "$PROCFILE") processes from ${PROCFILE#"$ROOT"/} (Ctrl-C stops everything)"
"$HONCHO" -f "$PROCFILE" -d "$ROOT" -e /dev/null start &
HONCHO_PID=$!
wait "$HONCHO_PID"
rc=$?
log "honcho exited (rc=$rc)"
cleanup
exit "$rc"
