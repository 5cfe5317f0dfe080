#!/usr/bin/env bash
# The whole check, as CI runs it: services, format, lints, docs, every test and bench target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Real PostgreSQL and Redis on loopback (installed and started when missing).
eval "$(scripts/services.sh)"
# The scale-out tests: a Redis Cluster (3 masters, 3 replicas) and a PostgreSQL
# streaming replica, also on loopback (REDIS_CLUSTER_URLS, DB_REPLICA_URLS).
eval "$(scripts/services.sh cluster)"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# One feature set everywhere, so cargo never rebuilds between the steps.
set -x
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features
# Examples as programs: with --all-targets, `cargo test` builds them only as test
# harnesses, and the multi-process tests start the durable worker example.
cargo build --workspace --examples --all-features
# The README's first command and the small default build of the facade, which
# --all-features hides.
cargo check --example service --features full
cargo check -p cortex-core
# --all-targets runs unit and integration tests, examples' tests and each criterion bench once.
cargo test --workspace --all-targets --all-features 2>&1 | tee -a "$log"
# --all-targets skips doctests; the crate READMEs are doctested here.
cargo test --workspace --doc --all-features 2>&1 | tee -a "$log"
# The fault suite, short form: two service instances under load on a private
# PostgreSQL, Redis and MCP server while each of them fails (a few minutes; the
# binaries are the ones built above).
scripts/faults.sh
# Every crate as it would be published, each built alone from its package with its
# default features (in a target dir of its own, so the builds above stay warm).
# Cargo treats the packages it verifies as registry crates, which never change for a
# version: it reuses their unpacked sources and their builds from the last run. Drop
# both, so every run builds the code as it is now.
pkg_target="${CARGO_TARGET_DIR:-target}/pkg"
for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  case "$(basename "$dir")" in index.crates.io-*) continue ;; esac
  rm -rf "$dir"cortex-*
done
rm -rf "$pkg_target"/debug/.fingerprint/cortex-* "$pkg_target"/debug/deps/*cortex_* \
  "$pkg_target"/debug/build/cortex-*
CARGO_TARGET_DIR="$pkg_target" cargo package --workspace --allow-dirty --quiet
{ set +x; } 2>/dev/null

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
