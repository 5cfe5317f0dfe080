#!/usr/bin/env bash
# Compare cortex-load with wrk at 64 connections against the same local server.
# Both tools share the machine's cores with the server, so only the ratio matters.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PORT="${PORT:-18080}"
DURATION="${DURATION:-10s}"
URL="http://127.0.0.1:${PORT}/"

if ! command -v wrk >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
fi

cargo build --release --quiet -p cortex-load --bin cortex-load --example load_target

"$CARGO_TARGET_DIR/release/examples/load_target" "$PORT" 2>/dev/null &
SERVER=$!
# Kill only the server this script started.
trap 'kill "$SERVER" 2>/dev/null || true' EXIT

for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then break; fi
    sleep 0.1
done

# ROUNDS > 1 alternates the two tools that many times (the machine may be busy with
# other work; alternating spreads that noise over both) and prints the median ratio.
ROUNDS="${ROUNDS:-1}"
ratios=()
for round in $(seq "$ROUNDS"); do
    wrk_rps=$(wrk -t2 -c64 -d"$DURATION" "$URL" | awk '/^Requests\/sec:/ {print $2}')
    sleep 1
    ours_rps=$("$CARGO_TARGET_DIR/release/cortex-load" --url "$URL" --users 64 --duration "$DURATION" \
        --think-time 0 --quiet | awk '/^Duration:/ {print $4}')
    sleep 1
    ratio=$(awk -v a="$ours_rps" -v b="$wrk_rps" 'BEGIN { printf "%.3f", a / b }')
    ratios+=("$ratio")
    [ "$ROUNDS" -gt 1 ] && echo "round ${round}:"
    echo "wrk:         ${wrk_rps} req/s"
    echo "cortex-load: ${ours_rps} req/s"
    echo "ratio:       ${ratio}"
done
if [ "$ROUNDS" -gt 1 ]; then
    printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
        m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "median ratio over %d rounds: %.3f\n", NR, m }'
fi
