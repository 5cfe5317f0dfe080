#!/usr/bin/env bash
# Captures real EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) output from the test server into
# tests/fixtures/*.json. Run against a throwaway database: it (re)creates tables in the
# schema dbtune_fx. Usage: DATABASE_URL=postgres://... scripts/capture-fixtures.sh [NAME]...
# With names, only those fixtures are written (the others keep their captured figures,
# which the tests read by hand).
set -euo pipefail
url="${DATABASE_URL:-postgres://cortex@127.0.0.1:5432/cortex}"
out="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures"
mkdir -p "$out"
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }

psql_ <<'SQL'
DROP SCHEMA IF EXISTS dbtune_fx CASCADE;
CREATE SCHEMA dbtune_fx;
SET search_path = dbtune_fx;
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, region int NOT NULL);
INSERT INTO customers SELECT g, 'Name' || g, g % 50 FROM generate_series(1, 20000) g;
CREATE TABLE orders (
  id int PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
  amount numeric NOT NULL, name text NOT NULL, metadata jsonb NOT NULL);
INSERT INTO orders
SELECT g, 1 + g % 20000, (ARRAY['new','paid','shipped','done'])[1 + g % 4], g % 1000,
       'Item' || g, jsonb_build_object('status', (ARRAY['active','archived'])[1 + g % 97 / 96])
FROM generate_series(1, 200000) g;
CREATE TABLE bitmap (id int, k int NOT NULL, pad text);
INSERT INTO bitmap SELECT g, g % 1000, repeat('x', 50) FROM generate_series(1, 300000) g;
CREATE INDEX bitmap_k ON bitmap (k);
CREATE TABLE hf (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = false);
INSERT INTO hf SELECT g, g FROM generate_series(1, 100000) g;
VACUUM ANALYZE hf;
UPDATE hf SET v = v + 1 WHERE id % 2 = 0;
CREATE TABLE stale (id int, v int) WITH (autovacuum_enabled = false);
INSERT INTO stale SELECT g, g % 1000 FROM generate_series(1, 1000) g;
ANALYZE stale;
INSERT INTO stale SELECT g, 5 FROM generate_series(1, 100000) g;
CREATE TABLE events (id int, kind text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO events
SELECT g, (ARRAY['click','view','buy'])[1 + g % 3],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds'
FROM generate_series(1, 1000000) g;
ANALYZE customers; ANALYZE orders; ANALYZE bitmap; ANALYZE events;
SQL

capture() { # name, setup SQL, query
  local name="$1" setup="$2" query="$3"
  if [ "${#wanted[@]}" -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then return; fi
  psql_ -A -t -o "$out/$name.json" <<SQL
SET search_path = dbtune_fx;
SET max_parallel_workers_per_gather = 0;
SET jit = off;
$setup
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) $query;
ROLLBACK;
SQL
  echo "captured $name"
}

wanted=("$@")
capture seq_scan_single "" "SELECT * FROM orders WHERE customer_id = 42"
capture seq_scan_multi "" "SELECT * FROM orders WHERE customer_id = 42 AND status = 'paid'"
capture seq_scan_lower "" "SELECT * FROM customers WHERE lower(name) = 'name42'"
capture seq_scan_jsonb "" "SELECT id FROM orders WHERE metadata ->> 'status' = 'archived'"
capture seq_scan_range "" "SELECT * FROM orders WHERE amount > 998"
capture disk_sort "SET work_mem = '64kB';" "SELECT * FROM orders ORDER BY name"
capture hash_batches "SET work_mem = '64kB';" \
  "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
capture hash_join "" \
  "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
capture lossy_bitmap "SET work_mem = '64kB'; SET enable_seqscan = off; SET enable_indexscan = off;" \
  "SELECT * FROM bitmap WHERE k < 300"
capture heap_fetches "SET enable_seqscan = off; SET enable_bitmapscan = off;" \
  "SELECT id FROM hf WHERE id < 50000"
capture large_offset "" "SELECT * FROM orders ORDER BY id OFFSET 50000 LIMIT 10"
capture nested_loop "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off;" \
  "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.amount < 100"
capture stale_stats "" "SELECT * FROM stale WHERE v = 5"
capture clean "" "SELECT * FROM customers WHERE id = 42"
capture subplans "" \
  "WITH big AS MATERIALIZED (SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id)
   SELECT c.id, (SELECT max(amount) FROM orders o WHERE o.customer_id = c.id) AS top,
          (SELECT max(n) FROM big) AS most
   FROM customers c WHERE c.id < 50 AND c.region IN (SELECT customer_id % 50 FROM big WHERE n > 9)"
capture update "" "UPDATE customers SET region = region + 1 WHERE id < 100"
capture parallel "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;" \
  "SELECT status, count(*) FROM orders WHERE amount > 10 GROUP BY status"
capture partial_index "" \
  "SELECT id FROM orders WHERE status = 'paid' AND customer_id = 42"
capture jsonb_contains "" \
  "SELECT id FROM orders WHERE metadata @> '{\"status\": \"archived\"}'"
capture jsonb_exists "" "SELECT id FROM orders WHERE metadata ? 'status' AND amount = 5"
capture correlated_subplan "" \
  "SELECT c.id, (SELECT max(o.amount) FROM orders o WHERE o.customer_id = c.id) FROM customers c WHERE c.id < 2000"
capture heavy_aggregate "" \
  "SELECT customer_id, sum(amount), count(*) FROM orders GROUP BY customer_id"
capture time_range "" \
  "SELECT count(*) FROM events WHERE created_at >= '2024-03-01' AND created_at < '2024-03-02'"

# The fixtures are captured; the tables are not needed any more.
psql_ -c 'DROP SCHEMA dbtune_fx CASCADE'
