#!/usr/bin/env bash
# deploy/run.sh — what `make run` does (the contract: docs API.md §1).
#
#   1. load ./.env if present (a variable already set in the environment wins);
#   2. if a Redis answers on DEX_REDIS_URL (default redis://127.0.0.1:6379/0), use it and leave it
#      alone; otherwise start redis-server on that host:port (AOF on, data and redis.log in
#      DEX_REDIS_DIR, default var/redis/) and wait until it answers;
#   3. the chain: with DEX_CHAIN_RPC_URL set, use that node (the vault already deployed, named by
#      DEX_VERIFYING_CONTRACT); else, unless DEX_LOCAL_CHAIN=0, start a local hardhat node on
#      127.0.0.1:DEX_CHAIN_PORT (default 8545; a block every DEX_CHAIN_BLOCK_MS, default 1000),
#      deploy the vault and a test USDC, write var/chain.json and var/markets.yaml (the markets
#      file with the tokens' addresses) and point the processes at them; with no chain at all
#      the bridge is left out (admin deposits only);
#   4. run every process of the Procfile (DEX_PROCFILE, default deploy/Procfile) under honcho in
#      the foreground, logs prefixed by process name;
#   5. on Ctrl-C / SIGTERM / SIGHUP, or when honcho exits (one process died), stop all of them,
#      the chain and the Redis this script started (only those), wait for them, and exit.
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
CHAIN_PID=""
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
    if [[ -n $CHAIN_PID ]]; then
        log "stopping the local chain (pid $CHAIN_PID)"
        stop_pid "$CHAIN_PID" "hardhat node" 10
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

# --- the chain --------------------------------------------------------------------------------
# Hardhat's development accounts #0 (deployer, the vault's owner) and #1 (the bridge): publicly
# known keys of a throw-away local chain, never of a real one (docs/operations.md).
DEV_DEPLOYER_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
DEV_BRIDGE_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
DEV_BRIDGE_ADDRESS=0x70997970C51812dc3A010C7d01b50e0d17dc79C8

chain_answers() {   # a JSON-RPC node answers eth_chainId at URL $1 (stdlib only: quick)
    "$PY" -c '
import json, sys, urllib.request
body = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}"
request = urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"})
sys.exit(0 if "result" in json.load(urllib.request.urlopen(request, timeout=2)) else 1)
' "$1" >/dev/null 2>&1
}

start_local_chain() {
    local port=${DEX_CHAIN_PORT:-8545} url cli=$ROOT/chain/node_modules/hardhat/internal/cli/cli.js
    url=http://127.0.0.1:$port
    command -v node >/dev/null 2>&1 && [[ -f $cli && -f $ROOT/chain/build/Vault.json ]] \
        || die "the local chain is not installed: run 'make setup' (npm ci + contracts), or set DEX_LOCAL_CHAIN=0"
    chain_answers "$url" && die "something already answers JSON-RPC on $url: set DEX_CHAIN_RPC_URL to use it, or DEX_CHAIN_PORT"
    log "starting a local chain (hardhat node) on $url, a block every ${DEX_CHAIN_BLOCK_MS:-1000} ms (log: var/chain.log)"
    (cd "$ROOT/chain" && DEX_CHAIN_BLOCK_MS=${DEX_CHAIN_BLOCK_MS:-1000} exec setsid node "$cli" \
        --config hardhat.config.cjs node --hostname 127.0.0.1 --port "$port") \
        >"$ROOT/var/chain.log" 2>&1 </dev/null &
    CHAIN_PID=$!
    local tries=300   # ~30 s
    until chain_answers "$url"; do
        kill -0 "$CHAIN_PID" 2>/dev/null || { tail -n 15 "$ROOT/var/chain.log" >&2; CHAIN_PID=""; die "the hardhat node exited"; }
        (( --tries > 0 )) || die "the hardhat node did not answer on $url within 30 s (see var/chain.log)"
        sleep 0.1
    done
    DEX_CHAIN_RPC_URL=$url DEX_DEPLOYER_KEY=$DEV_DEPLOYER_KEY DEX_BRIDGE_SIGNER=$DEV_BRIDGE_ADDRESS \
        "$PY" -m services.bridge.deploy --test-token USDC:6 >"$ROOT/var/chain.json" \
        || die "deploying the vault failed"
    "$PY" - "$ROOT/var/chain.json" "${DEX_MARKETS_FILE:-$ROOT/deploy/markets.yaml}" "$ROOT/var/markets.yaml" <<'PY' || die "cannot write var/markets.yaml"
import json, sys, yaml
chain = json.load(open(sys.argv[1]))
document = yaml.safe_load(open(sys.argv[2]))
assets = document["assets"]
if "ETH" in assets:
    assets["ETH"]["token"] = "0x" + "00" * 20  # the chain's coin
for symbol, token in chain["tokens"].items():
    if symbol in assets:
        assets[symbol]["token"] = token
open(sys.argv[3], "w").write("# written by deploy/run.sh for the local chain\n" + yaml.safe_dump(document))
PY
    export DEX_CHAIN_RPC_URL=$url DEX_BRIDGE_KEY=$DEV_BRIDGE_KEY DEX_MARKETS_FILE=$ROOT/var/markets.yaml
    export DEX_CHAIN_ID=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["chainId"])' "$ROOT/var/chain.json")
    export DEX_VERIFYING_CONTRACT=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["vault"])' "$ROOT/var/chain.json")
    log "vault $DEX_VERIFYING_CONTRACT and test USDC deployed on chain $DEX_CHAIN_ID (var/chain.json)"
}

if [[ -n ${DEX_CHAIN_RPC_URL:-} ]]; then
    log "using the chain at $DEX_CHAIN_RPC_URL (vault ${DEX_VERIFYING_CONTRACT:-unset})"
elif [[ ${DEX_LOCAL_CHAIN:-1} != 0 ]]; then
    start_local_chain
fi
if [[ -z ${DEX_CHAIN_RPC_URL:-} ]]; then
    # No chain: the bridge has nothing to follow (admin deposits only), so it is not started.
    grep -v '^bridge:' "$PROCFILE" >"$ROOT/var/Procfile.no-chain" || die "cannot write var/Procfile.no-chain"
    PROCFILE=$ROOT/var/Procfile.no-chain
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
