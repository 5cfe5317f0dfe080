#!/usr/bin/env bash
# Compare the durable queue of cortex-tasks with apalis-redis on the same local Redis:
# a deep queue (20 000 no-op jobs enqueued at once, jobs/s until all are recorded done)
# and a shallow one (2 000 jobs/s for 10 s, enqueue-to-start p50/p99), 2 workers each,
# ROUNDS times (default 3) alternating the two, then the median ratios.
#
# The harness is peers/queue-vs-apalis, a Cargo project of its own (its own
# [workspace]), so the main workspace and CI never compile apalis. Both sides share the
# machine's cores with Redis, so only the ratios of one run matter.
#
#   ROUNDS=5 scripts/queue-vs-apalis.sh
#   DEEP_JOBS, RATE, SECS, CONCURRENCY, BATCH override the workload (see the harness).
set -euo pipefail

cd "$(dirname "$0")/.."
# A target folder of its own: the harness shares no build with the workspace.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cortex-target}/queue-vs-apalis"
export ROUNDS="${ROUNDS:-3}"

eval "$(scripts/services.sh)"

(cd peers/queue-vs-apalis && cargo build --release --quiet)
"$CARGO_TARGET_DIR/release/queue-vs-apalis"
