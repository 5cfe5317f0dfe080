#!/usr/bin/env bash
# Check the local cluster that `scripts/services.sh cluster` starts, end to end:
#
#   scripts/cluster-smoke.sh           start (or reuse) it, check it, leave it running
#   scripts/cluster-smoke.sh --cold    stop and remove it first, so the start is timed from cold
#   scripts/cluster-smoke.sh --stop    ... and stop and remove it at the end
#
# Checks: the start and a second (idempotent) start with their times; writes and reads
# through every node with cluster redirects; CLUSTER INFO on every node; a row written on
# the primary shows on the replica, which refuses writes; a master killed with
# `cluster-kill` is failed over to its replica and writes go on, and after
# `cluster-start` it comes back as a replica and the cluster is healthy again.
# Needs the default servers: run `eval "$(scripts/services.sh)"` first. Every wait is
# bounded (CORTEX_SERVICES_WAIT seconds, default 30).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
svc="$root/scripts/services.sh"
WAIT_SECS="${CORTEX_SERVICES_WAIT:-30}"
cold=0 stop=0
for arg in "$@"; do
  case $arg in
    --cold) cold=1 ;;
    --stop) stop=1 ;;
    *) printf 'cluster-smoke: unknown argument %s (use --cold, --stop)\n' "$arg" >&2; exit 2 ;;
  esac
done

say() { printf 'cluster-smoke: %s\n' "$*" >&2; }
fail() { printf 'cluster-smoke: FAILED: %s\n' "$*" >&2; exit 1; }
cli() { local p=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$p" "$@" 2>/dev/null | tr -d '\r'; }
sql() { PGCONNECT_TIMEOUT=5 timeout 20 psql "$1" -Atq -v ON_ERROR_STOP=1 -c 'set client_min_messages = warning' -c "$2"; }
until_ok() { # what, command...
  local what=$1 deadline=$((SECONDS + WAIT_SECS)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "$what: not within ${WAIT_SECS}s"
    sleep 0.2
  done
}
timed_start() { # label
  local t0 t1
  t0=$(date +%s.%N)
  eval "$("$svc" cluster)"
  t1=$(date +%s.%N)
  say "$1: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s", b - a }')"
}

: "${DATABASE_URL:?run eval \"\$(scripts/services.sh)\" first}"
if [ $cold = 1 ]; then "$svc" cluster-stop; fi
timed_start "scripts/services.sh cluster (first call)"
timed_start "scripts/services.sh cluster (again, idempotent)"
say "REDIS_CLUSTER_URLS=$REDIS_CLUSTER_URLS"
say "REDIS_CLUSTER_PORTS=$REDIS_CLUSTER_PORTS"
say "DB_REPLICA_URLS=$DB_REPLICA_URLS"
IFS=, read -ra ports <<<"$REDIS_CLUSTER_PORTS"
[ ${#ports[@]} = 6 ] || fail "REDIS_CLUSTER_PORTS has ${#ports[@]} ports, not 6"

# Keys spread over all three masters' slots, written through one node and read through
# every node (-c follows MOVED).
run=$$
for k in a b c d e f g h; do
  [ "$(cli "${ports[0]}" -c set "smoke:$run:$k" "$k")" = OK ] || fail "SET smoke:$run:$k through ${ports[0]}"
done
for p in "${ports[@]}"; do
  [ "$(cli "$p" -c get "smoke:$run:a")" = a ] || fail "GET through $p"
  [ "$(cli "$p" -c get "smoke:$run:h")" = h ] || fail "GET through $p"
  info=$(cli "$p" cluster info)
  grep -qx cluster_state:ok <<<"$info" || fail "node $p: $(grep cluster_state <<<"$info")"
  grep -qx cluster_slots_ok:16384 <<<"$info" || fail "node $p: $(grep cluster_slots_ok <<<"$info")"
done
say "SET/GET through every node and CLUSTER INFO (cluster_state:ok, 16384 slots ok) on every node: ok"

# The replica: in recovery, sees a row written on the primary, refuses writes.
primary_postgres=${DATABASE_URL%/*}/postgres
replica_postgres=${DB_REPLICA_URLS%%,*}; replica_postgres=${replica_postgres%/*}/postgres
[ "$(sql "${DB_REPLICA_URLS%%,*}" 'select pg_is_in_recovery()')" = t ] || fail "the replica is not in recovery"
token="smoke-$(date +%s%N)"
sql "$primary_postgres" "insert into cortex_replica_probe values (2, '$token') on conflict (id) do update set token = excluded.token" >/dev/null
seen() { [ "$(sql "$replica_postgres" 'select token from cortex_replica_probe where id = 2' 2>/dev/null)" = "$token" ]; }
until_ok "the row written on the primary shows on the replica" seen
if sql "$replica_postgres" "update cortex_replica_probe set token = 'x' where id = 2" >/dev/null 2>&1; then
  fail "the replica accepted a write"
fi
say "replica: in recovery, a row written on the primary shows, writes refused: ok"

# Failover: kill the master that serves slot 0, wait for its replica to take over.
nodes=$(cli "${ports[0]}" cluster nodes)
victim=$(awk '$3 ~ /master/ && $0 ~ / 0-/ { split($2, a, "[:@]"); print a[2]; exit }' <<<"$nodes")
[ -n "$victim" ] || fail "no master serves slot 0"
other=${ports[0]}; [ "$other" != "$victim" ] || other=${ports[1]}
"$svc" cluster-kill "$victim"
promoted() {
  local m
  m=$(cli "$other" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && $0 ~ / 0-/ { split($2, a, "[:@]"); print a[2]; exit }')
  [ -n "$m" ] && [ "$m" != "$victim" ]
}
t0=$SECONDS
until_ok "a replica takes over the slots of the killed master $victim" promoted
say "master $victim killed: its replica took over within about $((SECONDS - t0)) s"
until_ok "SET after the failover" test "$(cli "$other" -c set "smoke:$run:a" after)" = OK
[ "$(cli "$other" -c get "smoke:$run:a")" = after ] || fail "GET after the failover"
"$svc" cluster-start "$victim"
eval "$("$svc" cluster)"
role=$(cli "$victim" role | head -n 1)
[ "$role" = slave ] || fail "the restarted node $victim is a $role, not a replica"
say "node $victim restarted with cluster-start: back as a replica, cluster healthy: ok"

for k in a b c d e f g h; do cli "${ports[0]}" -c del "smoke:$run:$k" >/dev/null; done
if [ $stop = 1 ]; then "$svc" cluster-stop; fi
say "all checks passed"
