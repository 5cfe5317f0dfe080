#!/usr/bin/env bash
# Compare cortex-load with wrk and oha against the same local server, with the same
# connection count and duration. All three share the machine's cores with the server,
# so only the ratios of one run matter, not the absolute rates.
#
#   ROUNDS=3 scripts/load-vs-peers.sh
#
# Settings (environment): ROUNDS (1), DURATION (10s), CONNECTIONS (64), PORT (18080).
# Each round runs wrk, oha and cortex-load one after the other (alternating spreads
# the noise of a busy machine over all three) and prints each rate, the ratios
# cortex-load/wrk and cortex-load/oha, and the CPU time (user + system) each tool
# spent per answered request: on shared cores, the tool's CPU per request is what
# it takes away from the server, and it varies less than the rates when other work
# runs on the machine. Several rounds end with the medians.
# wrk comes from apt, oha from `cargo install oha --locked` when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PORT="${PORT:-18080}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
ROUNDS="${ROUNDS:-1}"
URL="http://127.0.0.1:${PORT}/"

if ! command -v wrk >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
fi
if ! command -v oha >/dev/null 2>&1; then
    cargo install oha --locked --quiet
fi
if ! command -v jq >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y jq >/dev/null
fi

cargo build --release --quiet -p cortex-load --bin cortex-load --example load_target

"$CARGO_TARGET_DIR/release/examples/load_target" "$PORT" 2>/dev/null &
SERVER=$!
OUT=$(mktemp -d)
# Kill only the server this script started.
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$OUT"' EXIT

for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then break; fi
    sleep 0.1
done

echo "wrk $(wrk --version 2>&1 | head -1 | awk '{print $2}'), $(oha --version), $CONNECTIONS connections, $DURATION per tool and round"
# Run a tool with its stdout in $OUT/$1 and its CPU time ("user system", seconds) in
# $OUT/$1.cpu (bash's `time`, so no extra program is needed).
TIMEFORMAT='%3U %3S'
timed() {
    local name=$1
    shift
    { time "$@" >"$OUT/$name" 2>/dev/null; } 2>"$OUT/$name.cpu"
}
# CPU microseconds per request: cpu_file requests.
per_request() {
    awk -v n="$2" '{ printf "%.2f", ($1 + $2) * 1e6 / n }' "$1"
}

echo "round  wrk_req/s  oha_req/s  cortex-load_req/s  vs_wrk  vs_oha  cpu_us/req: wrk  oha  cortex-load"
vs_wrk=()
vs_oha=()
cpu_wrk=()
cpu_oha=()
cpu_ours=()
for round in $(seq "$ROUNDS"); do
    # Two threads each, one per core: wrk -t2, oha's runtime with 2 workers,
    # cortex-load's default (one thread per CPU).
    timed wrk wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "$URL"
    wrk_rps=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/wrk")
    wrk_n=$(awk '/requests in/ {print $1}' "$OUT/wrk")
    sleep 1
    timed oha oha -z "$DURATION" -c "$CONNECTIONS" --worker-threads 2 --no-tui \
        --output-format json "$URL"
    oha_rps=$(jq '.summary.requestsPerSec' "$OUT/oha")
    oha_n=$(jq '[.statusCodeDistribution[]] | add' "$OUT/oha")
    sleep 1
    timed ours "$CARGO_TARGET_DIR/release/cortex-load" "$URL" -c "$CONNECTIONS" -z "$DURATION" --quiet
    ours_rps=$(awk '/^Duration:/ {print $4}' "$OUT/ours")
    ours_n=$(awk '/^Requests:/ {print $2}' "$OUT/ours")
    sleep 1
    w=$(awk -v a="$ours_rps" -v b="$wrk_rps" 'BEGIN { printf "%.3f", a / b }')
    o=$(awk -v a="$ours_rps" -v b="$oha_rps" 'BEGIN { printf "%.3f", a / b }')
    vs_wrk+=("$w")
    vs_oha+=("$o")
    cpu_wrk+=("$(per_request "$OUT/wrk.cpu" "$wrk_n")")
    cpu_oha+=("$(per_request "$OUT/oha.cpu" "$oha_n")")
    cpu_ours+=("$(per_request "$OUT/ours.cpu" "$ours_n")")
    printf '%5s  %9.0f  %9.0f  %17.0f  %6s  %6s  %15s  %4s  %11s\n' "$round" "$wrk_rps" "$oha_rps" \
        "$ours_rps" "$w" "$o" "${cpu_wrk[-1]}" "${cpu_oha[-1]}" "${cpu_ours[-1]}"
done
median() {
    printf '%s\n' "$@" | sort -n | awk '{ r[NR] = $1 } END {
        printf "%.3f", (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
}
echo "median over $ROUNDS rounds: cortex-load/wrk $(median "${vs_wrk[@]}"), cortex-load/oha $(median "${vs_oha[@]}")"
echo "median CPU per request: wrk $(median "${cpu_wrk[@]}") us, oha $(median "${cpu_oha[@]}") us, cortex-load $(median "${cpu_ours[@]}") us"
