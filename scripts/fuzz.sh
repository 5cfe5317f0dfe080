#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for a fixed time, by hand (CI runs the property
# tests, not the fuzzers). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s each, every target
#
# Seed corpora are written into fuzz/corpus/<target>/ (not committed) before each run:
# the EXPLAIN fixtures of cortex-dbtune, a valid scenario file and config for
# cortex-load. Crash inputs land in fuzz/artifacts/<target>/. Prints per target the
# executions and whether a crash was found, writes the table to
# fuzz/artifacts/summary.tsv, and exits non-zero if any target crashed.
# FUZZ_TARGET_DIR sets the build directory (default fuzz/target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

secs=${1:-60}
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]; SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(explain_json cache_key config redact_url prometheus_names load_scenario)
fi
target_dir=${FUZZ_TARGET_DIR:-$root/fuzz/target}

cd fuzz
cargo +nightly fuzz build --target-dir "$target_dir" >&2

seed() {
    local t=$1 dir=corpus/$1
    mkdir -p "$dir" "artifacts/$t"
    case $t in
        explain_json)
            cp "$root"/crates/cortex-dbtune/tests/fixtures/*.json "$dir"/ ;;
        load_scenario)
            # The first byte picks the parser: even = scenario file, odd = whole config.
            printf '\000[{"name":"list","endpoint":"/users?page=1","weight":3},{"name":"create","endpoint":"/users","method":"POST","payload":{"a":[1,2.5,null]},"headers":{"x-trace":"t"},"weight":0.5}]' >"$dir/seed-scenarios"
            printf '\001{"url":"http://127.0.0.1:8080","users":2,"requests_per_user":3,"rate":5,"ramp_up":"1s","think_time":0.1,"timeout":"10s","scenarios":[{"name":"a","endpoint":"/"}]}' >"$dir/seed-config" ;;
        redact_url)
            printf 'postgres://user:hunter22@db:5432/app?sslpassword=k3y&sslmode=require' >"$dir/seed-url" ;;
    esac
}

summary=artifacts/summary.tsv
mkdir -p artifacts
printf 'target\tseconds\texecutions\tcrashed\n' >"$summary"
failed=0
for t in "${targets[@]}"; do
    seed "$t"
    log=$(mktemp)
    set +e
    cargo +nightly fuzz run --target-dir "$target_dir" "$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
    fi
    crashed=no
    if [ "$rc" -ne 0 ]; then
        crashed=yes
        failed=1
        echo "--- $t: exit $rc, last lines of the log:" >&2
        tail -30 "$log" >&2
        ls -1 "artifacts/$t" >&2 || true
    fi
    printf '%-18s %4ss  executions %-12s crash: %s\n' "$t" "$secs" "${execs:-?}" "$crashed"
    printf '%s\t%s\t%s\t%s\n' "$t" "$secs" "${execs:-?}" "$crashed" >>"$summary"
    rm -f "$log"
done
exit "$failed"
