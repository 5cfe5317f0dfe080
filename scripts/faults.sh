#!/usr/bin/env bash
# The fault suite: two example-service instances on a private PostgreSQL, Redis and MCP
# server, under cortex-load, while Redis stops and pauses, PostgreSQL restarts and runs
# out of connections, the MCP server and one instance are killed. Checks that callers
# saw only documented errors, that errors stopped within the stated bound, that no
# answer waited past the request timeout, that no instance crashed but the one killed,
# and that every accepted task was done or dead-lettered (counted from the database
# and the dead-letter stream). Prints a table; exits 1 when a check fails.
#
#   scripts/faults.sh                   short form (about 4 minutes; CI runs it)
#   scripts/faults.sh --long            longer windows, then a 30 minute soak with a plot
#   scripts/faults.sh --only pg-full    some faults only (comma-separated names)
#   scripts/faults.sh --long --soak 5m  a shorter soak
#
# The report goes to target/faults/report.md (and results.json, soak.svg); set OUT to
# write elsewhere. The servers are private to the run (free ports, a temporary folder)
# and stopped at its end: servers other programs use are never touched. The short form
# uses debug builds, the long form release builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

profile=debug
build=()
for arg in "$@"; do
  if [[ $arg == --long ]]; then profile=release; build=(--release); fi
done

# Installs redis-server, PostgreSQL and the reference MCP server when missing
# (MCP_EVERYTHING_JS); the servers it starts are not the ones the suite breaks.
eval "$(scripts/services.sh)"

# The features scripts/test.sh builds with, so a run after it builds nothing again.
cargo build "${build[@]}" --quiet --workspace --all-features --examples --bins
bin="$CARGO_TARGET_DIR/$profile"
exec "$bin/examples/faults" --service "$bin/examples/service" --load "$bin/cortex-load" \
  --out "${OUT:-target/faults}" "$@"
