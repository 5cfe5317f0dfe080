#!/usr/bin/env bash
# The whole check, as CI runs it: services, format, lints, docs, every test and bench target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Real PostgreSQL and Redis on loopback (installed and started when missing).
eval "$(scripts/services.sh)"

# One feature set everywhere, so cargo never rebuilds between the steps.
set -x
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features
# --all-targets runs unit and integration tests, examples' tests and each criterion bench once.
cargo test --workspace --all-targets --all-features
# --all-targets skips doctests; the crate READMEs are doctested here.
cargo test --workspace --doc --all-features
