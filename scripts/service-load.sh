#!/usr/bin/env bash
# Drive the example service with cortex-load and print the figures of docs/benchmarks.md.
#
#   scripts/service-load.sh                 # PostgreSQL + Redis (from scripts/services.sh)
#   MODE=sqlite scripts/service-load.sh     # embedded: SQLite, memory cache
#
# Each round runs, one after the other with the same users and duration:
#   1. GET /workspaces/1 with caching on,
#   2. the same read with caching off (CORTEX_CACHE=off, every read from the database),
#   3. the same bytes from a bare axum handler (`service --bare`),
# then the mixed read/write scenario of examples/service/load.json. Rounds alternate so
# that other work on the machine spreads over every variant; medians are printed.
# Variables: MODE (postgres|sqlite), ROUNDS (3), USERS (64), DURATION (10s), PORT (18500).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
MODE="${MODE:-postgres}"
ROUNDS="${ROUNDS:-3}"
USERS="${USERS:-64}"
DURATION="${DURATION:-10s}"
PORT="${PORT:-18500}"

cargo build --release --quiet --all-features --example service
cargo build --release --quiet -p cortex-load --bin cortex-load
SERVICE="$CARGO_TARGET_DIR/release/examples/service"
LOAD="$CARGO_TARGET_DIR/release/cortex-load"

work=$(mktemp -d)
pids=()
cleanup() {
    # Only what this script started.
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "${LOAD_DB:-}" ]]; then
        psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

env_mode=(CORTEX_ADMIN_TOKEN=load LOG_LEVEL=warn CORTEX_DATA_DIR="$work/data" DB_CONNECTION_LIMIT=1000)
if [[ $MODE == postgres ]]; then
    eval "$(scripts/services.sh)"
    ADMIN_URL="$DATABASE_URL"
    LOAD_DB="cortex_service_load_$$"
    psql "$ADMIN_URL" -qc "CREATE DATABASE $LOAD_DB" >/dev/null
    env_mode+=(DATABASE_URL="${ADMIN_URL%/*}/$LOAD_DB" REDIS_URL="$REDIS_URL"
        CACHE_NAMESPACE="cortex:cache:load$$:" TASKS_QUEUE_NAME="load$$")
else
    env_mode+=(DATABASE_URL= REDIS_URL=)
fi

start() { # port, extra env...
    local port=$1; shift
    env "${env_mode[@]}" CORTEX_ADDR="127.0.0.1:$port" "$@" "$SERVICE" >"$work/$port.out" 2>"$work/$port.err" &
    pids+=($!)
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "service on port $port did not start:" >&2; cat "$work/$port.err" >&2; exit 1
}

start "$PORT"
base="http://127.0.0.1:$PORT"
post() { curl -sf -X POST "$base$1" -H 'content-type: application/json' -d "$2" >/dev/null; }
post /users '{"name":"Ada","email":"ada@example.com"}'
post /workspaces '{"name":"Core","owner_id":1,"metadata":{"team":"core"}}'
post /workspaces/1/conversations '{"topic":"Plans","participants":[1]}'
post /conversations/1/messages '{"sender_id":1,"content":"first"}'
curl -sf "$base/workspaces/1" >"$work/workspace.json"

start $((PORT + 1)) CORTEX_CACHE=off
env "${env_mode[@]}" CORTEX_ADDR="127.0.0.1:$((PORT + 2))" "$SERVICE" --bare "$work/workspace.json" >/dev/null 2>&1 &
pids+=($!)
sleep 1

run() { # url, extra args... -> "req/s p99_ms"
    "$LOAD" --url "$1" --users "$USERS" --duration "$DURATION" --think-time 0 --quiet "${@:2}" |
        awk '/^Duration:/ { rps = $4 } /^Latency ms:/ { for (i = 1; i < NF; i++) if ($i == "p99") p99 = $(i + 1) }
             END { print rps, p99 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$work/cached"; : >"$work/uncached"; : >"$work/bare"; : >"$work/mixed"
for round in $(seq "$ROUNDS"); do
    run "http://127.0.0.1:$PORT" --path /workspaces/1 >>"$work/cached"
    run "http://127.0.0.1:$((PORT + 1))" --path /workspaces/1 >>"$work/uncached"
    run "http://127.0.0.1:$((PORT + 2))" --path /workspaces/1 >>"$work/bare"
    run "http://127.0.0.1:$PORT" --scenario-file examples/service/load.json >>"$work/mixed"
    echo "round $round: cached $(tail -1 "$work/cached") | uncached $(tail -1 "$work/uncached") | bare $(tail -1 "$work/bare") | mixed $(tail -1 "$work/mixed")  (req/s p99 ms)"
done

col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }
c=$(col cached 1); u=$(col uncached 1); b=$(col bare 1); m=$(col mixed 1)
echo
echo "mode $MODE, $USERS users, $DURATION per run, medians of $ROUNDS rounds:"
printf '%-34s %12s %10s\n' "run" "req/s" "p99 ms"
printf '%-34s %12s %10s\n' "GET /workspaces/1, cache on" "$c" "$(col cached 2)"
printf '%-34s %12s %10s\n' "GET /workspaces/1, cache off" "$u" "$(col uncached 2)"
printf '%-34s %12s %10s\n' "same bytes, bare axum handler" "$b" "$(col bare 2)"
printf '%-34s %12s %10s\n' "mixed (examples/service/load.json)" "$m" "$(col mixed 2)"
awk -v c="$c" -v u="$u" -v b="$b" 'BEGIN {
    printf "cache on / cache off: %.2fx (goal 3x)\n", c / u
    printf "cached / bare axum:   %.2fx (goal 0.5x)\n", c / b }'
