//! Rule and model tests on EXPLAIN output captured from PostgreSQL 15
//! (tests/fixtures, written by scripts/capture-fixtures.sh). Expected figures were read
//! from the fixture JSON by hand.

use super::*;

fn fixture(name: &str) -> Plan {
    let text = match name {
        "clean" => include_str!("../../tests/fixtures/clean.json"),
        "correlated_subplan" => include_str!("../../tests/fixtures/correlated_subplan.json"),
        "heavy_aggregate" => include_str!("../../tests/fixtures/heavy_aggregate.json"),
        "jsonb_contains" => include_str!("../../tests/fixtures/jsonb_contains.json"),
        "jsonb_exists" => include_str!("../../tests/fixtures/jsonb_exists.json"),
        "partial_index" => include_str!("../../tests/fixtures/partial_index.json"),
        "time_range" => include_str!("../../tests/fixtures/time_range.json"),
        "disk_sort" => include_str!("../../tests/fixtures/disk_sort.json"),
        "hash_batches" => include_str!("../../tests/fixtures/hash_batches.json"),
        "hash_join" => include_str!("../../tests/fixtures/hash_join.json"),
        "heap_fetches" => include_str!("../../tests/fixtures/heap_fetches.json"),
        "large_offset" => include_str!("../../tests/fixtures/large_offset.json"),
        "lossy_bitmap" => include_str!("../../tests/fixtures/lossy_bitmap.json"),
        "nested_loop" => include_str!("../../tests/fixtures/nested_loop.json"),
        "parallel" => include_str!("../../tests/fixtures/parallel.json"),
        "seq_scan_jsonb" => include_str!("../../tests/fixtures/seq_scan_jsonb.json"),
        "seq_scan_lower" => include_str!("../../tests/fixtures/seq_scan_lower.json"),
        "seq_scan_multi" => include_str!("../../tests/fixtures/seq_scan_multi.json"),
        "seq_scan_range" => include_str!("../../tests/fixtures/seq_scan_range.json"),
        "seq_scan_single" => include_str!("../../tests/fixtures/seq_scan_single.json"),
        "stale_stats" => include_str!("../../tests/fixtures/stale_stats.json"),
        "subplans" => include_str!("../../tests/fixtures/subplans.json"),
        "update" => include_str!("../../tests/fixtures/update.json"),
        other => panic!("no fixture {other}"),
    };
    Plan::from_json(text).unwrap()
}

fn findings(name: &str) -> Vec<Finding> {
    analyze(&fixture(name), &Thresholds::default())
}

/// The one finding of `rule` (panics listing all findings when there is not exactly one).
fn one(fs: &[Finding], rule: &str) -> Finding {
    let hits: Vec<&Finding> = fs.iter().filter(|f| f.rule == rule).collect();
    assert_eq!(hits.len(), 1, "{rule}: {fs:#?}");
    hits[0].clone()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn parses_every_fixture_with_analyze_figures() {
    for name in [
        "clean",
        "correlated_subplan",
        "heavy_aggregate",
        "jsonb_contains",
        "jsonb_exists",
        "partial_index",
        "time_range",
        "disk_sort",
        "hash_batches",
        "hash_join",
        "heap_fetches",
        "large_offset",
        "lossy_bitmap",
        "nested_loop",
        "parallel",
        "seq_scan_jsonb",
        "seq_scan_lower",
        "seq_scan_multi",
        "seq_scan_range",
        "seq_scan_single",
        "stale_stats",
        "subplans",
        "update",
    ] {
        let p = fixture(name);
        assert!(p.execution_time_ms.is_some(), "{name}");
        assert!(p.planning_time_ms.is_some(), "{name}");
        for n in p.nodes() {
            assert!(n.node.actual_loops.is_some(), "{name} {}", n.path);
            assert!(n.own_time_ms.unwrap() >= 0.0 && n.own_cost >= 0.0);
            assert!(
                !matches!(n.node.kind(), NodeKind::Other(_)),
                "{name}: {}",
                n.node.node_type
            );
        }
    }
}

#[test]
fn model_fields() {
    let p = fixture("disk_sort");
    assert_eq!(p.root.kind(), NodeKind::Sort);
    assert_eq!(p.root.sort_method.as_deref(), Some("external merge"));
    assert_eq!(p.root.sort_space_type.as_deref(), Some("Disk"));
    assert_eq!(p.root.sort_key, ["name"]);
    assert!(p.root.buffers.temp_written > 0);
    let scan = &p.root.children[0];
    assert_eq!(scan.relation_name.as_deref(), Some("orders"));
    assert_eq!(scan.alias.as_deref(), Some("orders"));
    assert_eq!(scan.parent_relationship.as_deref(), Some("Outer"));

    let p = fixture("hash_join");
    assert_eq!(p.root.join_type.as_deref(), Some("Inner"));
    assert_eq!(p.root.hash_cond.as_deref(), Some("(o.customer_id = c.id)"));
    assert_eq!(p.root.children[1].hash_batches, Some(1));
    assert_eq!(p.root.children[1].original_hash_batches, Some(1));

    let p = fixture("subplans");
    let names: Vec<Option<&str>> = p
        .root
        .children
        .iter()
        .map(|c| c.subplan_name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            Some("CTE big"),
            Some("InitPlan 3 (returns $2)"),
            None,
            None,
            Some("SubPlan 2")
        ]
    );
    assert_eq!(p.root.children[0].cte_defined(), Some("big"));
    assert!(p.root.children[4].is_subplan());

    let p = fixture("update");
    assert_eq!(p.root.kind(), NodeKind::ModifyTable);
    assert_eq!(p.root.operation.as_deref(), Some("Update"));
    assert!(p.triggers.is_empty());

    let p = fixture("lossy_bitmap");
    assert_eq!(p.root.exact_heap_blocks, Some(808));
    assert!(p.root.recheck_cond.is_some());
    assert_eq!(p.root.children[0].index_cond.as_deref(), Some("(k < 300)"));

    let p = fixture("parallel");
    let gather = &p.root.children[0];
    assert_eq!(gather.kind(), NodeKind::GatherMerge);
    assert_eq!(
        (gather.workers_planned, gather.workers_launched),
        (Some(1), Some(1))
    );
}

#[test]
fn own_time_parallel_divides_by_processes() {
    // Gather Merge 79.015 ms; its Sort child reports 68.742 ms x 2 loops over
    // 1 worker + leader = 68.742 ms of wall clock, so the gather's own time is 10.273.
    let p = fixture("parallel");
    let nodes = p.nodes();
    let gm = nodes.iter().find(|n| n.path == "0.0").unwrap();
    assert!(close(gm.own_time_ms.unwrap(), 79.015 - 68.742));
    let sort = nodes.iter().find(|n| n.path == "0.0.0").unwrap();
    assert!(close(sort.total_time_ms.unwrap(), 68.742));
}

#[test]
fn own_time_and_cost_with_subplans_and_ctes() {
    let p = fixture("subplans");
    let nodes = p.nodes();
    let at = |path: &str| nodes.iter().find(|n| n.path == path).unwrap();
    // Root: 630.345 minus InitPlan 3 (2.347), Index Scan (0.142), Hash (60.412) and
    // SubPlan 2 (11.574 x 49 loops); the CTE (52.418) is not subtracted here.
    let want = 630.345 - 2.347 - 0.142 - 60.412 - 11.574 * 49.0;
    assert!(close(at("0").own_time_ms.unwrap(), want));
    // The CTE Scan that ran the CTE (57.836 ms) gives the CTE's 52.418 ms back.
    assert!(close(at("0.3.0.0").own_time_ms.unwrap(), 57.836 - 52.418));
    assert!(close(at("0.1.0").own_time_ms.unwrap(), 1.102));
    // Cost: 116509.66 - 5295.55 - 451.25 - 9.14 - 469.95 - 4595.03 x 24 planned rows.
    let want = 116_509.66 - 5295.55 - 451.25 - 9.14 - 469.95 - 4595.03 * 24.0;
    assert!(close(at("0").own_cost, want), "{}", at("0").own_cost);
    // SubPlan 2's Seq Scan: 11.574 ms over 49 loops (per loop 0.0..).
    assert_eq!(at("0.4.0").node.loops(), 49.0);
}

#[test]
fn indexable_seq_scan_single_column() {
    let f = one(&findings("seq_scan_single"), "indexable_seq_scan");
    assert_eq!(f.node_path, "0");
    assert_eq!(f.relation.as_deref(), Some("orders"));
    assert_eq!(f.measured, 199_990.0);
    assert_eq!(f.threshold, 20.0); // 2 x 10 rows returned
    assert_eq!(f.severity, Severity::Critical);
    let idx = f.index.unwrap();
    assert_eq!(idx.columns(), ["customer_id"]);
    assert_eq!(
        f.suggestion,
        "CREATE INDEX CONCURRENTLY ON \"orders\" (\"customer_id\");"
    );
}

#[test]
fn indexable_seq_scan_multi_column() {
    let f = one(&findings("seq_scan_multi"), "indexable_seq_scan");
    assert_eq!(f.measured, 199_990.0);
    assert_eq!(f.index.unwrap().columns(), ["customer_id", "status"]);
    assert!(f.message.contains("multi-column"));
    assert_eq!(
        f.suggestion,
        "CREATE INDEX CONCURRENTLY ON \"orders\" (\"customer_id\", \"status\");"
    );
}

#[test]
fn indexable_seq_scan_expressions_and_ranges() {
    let f = one(&findings("seq_scan_lower"), "indexable_seq_scan");
    assert_eq!(f.relation.as_deref(), Some("customers"));
    assert_eq!(f.measured, 19_999.0);
    assert_eq!(
        f.suggestion,
        "CREATE INDEX CONCURRENTLY ON \"customers\" ((lower(\"name\")));"
    );
    let f = one(&findings("seq_scan_jsonb"), "indexable_seq_scan");
    assert_eq!(f.measured, 197_939.0);
    assert_eq!(
        f.suggestion,
        "CREATE INDEX CONCURRENTLY ON \"orders\" (((\"metadata\" ->> 'status')));"
    );
    let f = one(&findings("seq_scan_range"), "indexable_seq_scan");
    assert_eq!(f.measured, 199_800.0);
    assert_eq!(f.index.unwrap().columns(), ["amount"]);
    // Correlated SubPlan: 199,990 removed per loop x 49 loops.
    let f = one(&findings("subplans"), "indexable_seq_scan");
    assert_eq!(f.node_path, "0.4.0");
    assert_eq!(f.measured, 199_990.0 * 49.0);
    assert_eq!(f.index.unwrap().columns(), ["customer_id"]);
}

#[test]
fn indexable_seq_scan_needs_waste() {
    // Stale-stats scan: returns 100,001 rows and removes 999 -> not indexable.
    assert!(
        findings("stale_stats")
            .iter()
            .all(|f| f.rule != "indexable_seq_scan")
    );
    // A full scan without a filter (disk sort's input) -> not indexable.
    assert!(
        findings("disk_sort")
            .iter()
            .all(|f| f.rule != "indexable_seq_scan")
    );
}

#[test]
fn rows_removed_by_filter() {
    let f = one(&findings("seq_scan_single"), "rows_removed_by_filter");
    assert!(close(f.measured, 199_990.0 / 200_000.0 * 100.0));
    assert_eq!((f.severity, f.threshold), (Severity::Critical, 90.0));
    // 180,000 of 200,000 removed = exactly 90%: warning (above 50, not above 90).
    let f = one(&findings("nested_loop"), "rows_removed_by_filter");
    assert_eq!(f.node_path, "0.0");
    assert!(close(f.measured, 90.0));
    assert_eq!((f.severity, f.threshold), (Severity::Warning, 50.0));
}

#[test]
fn disk_sort() {
    let f = one(&findings("disk_sort"), "disk_sort");
    assert_eq!((f.node_path.as_str(), f.node_type.as_str()), ("0", "Sort"));
    assert_eq!(f.measured, 12_592.0);
    assert!(f.suggestion.contains("work_mem"));
    assert!(findings("parallel").iter().all(|f| f.rule != "disk_sort"));
}

#[test]
fn hash_batches() {
    let f = one(&findings("hash_batches"), "hash_batches");
    assert_eq!(
        (f.node_path.as_str(), f.node_type.as_str()),
        ("0.1", "Hash")
    );
    assert_eq!(f.measured, 16.0);
    assert!(
        findings("hash_join")
            .iter()
            .all(|f| f.rule != "hash_batches")
    );
}

#[test]
fn heap_fetches() {
    // 74,998 heap fetches for 49,999 rows.
    let f = one(&findings("heap_fetches"), "heap_fetches");
    assert_eq!(f.node_type, "Index Only Scan");
    assert!(close(f.measured, 74_998.0 / 49_999.0 * 100.0));
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.suggestion, "VACUUM \"hf\"; (and tune autovacuum for it)");
}

#[test]
fn lossy_bitmap() {
    let f = one(&findings("lossy_bitmap"), "lossy_bitmap");
    assert_eq!(
        (f.node_path.as_str(), f.node_type.as_str()),
        ("0", "Bitmap Heap Scan")
    );
    assert_eq!(f.measured, 529.0);
}

#[test]
fn large_offset() {
    // The Index Scan under the Limit returned 50,010 rows; the Limit kept 10.
    let f = one(&findings("large_offset"), "large_offset");
    assert_eq!((f.node_path.as_str(), f.node_type.as_str()), ("0", "Limit"));
    assert_eq!(f.measured, 50_000.0);
    assert_eq!(f.severity, Severity::Warning);
}

#[test]
fn nested_loop_loops() {
    let f = one(&findings("nested_loop"), "nested_loop_loops");
    assert_eq!(
        (f.node_path.as_str(), f.node_type.as_str()),
        ("0", "Nested Loop")
    );
    assert_eq!(f.measured, 20_000.0);
    assert_eq!((f.severity, f.threshold), (Severity::Warning, 1000.0));
}

#[test]
fn stale_stats_and_bad_estimate() {
    let fs = findings("stale_stats");
    let f = one(&fs, "stale_stats");
    assert_eq!(f.relation.as_deref(), Some("stale"));
    assert_eq!(f.measured, 100_001.0); // planned 1, got 100,001
    assert_eq!(
        f.suggestion,
        "ANALYZE \"stale\"; and check that autovacuum analyzes it often enough"
    );
    let f = one(&fs, "bad_estimate");
    assert_eq!((f.measured, f.severity), (100_001.0, Severity::Critical));
    // Overestimate: planned 100, got 1 -> 100x, which is not above 100: info.
    let f = one(&findings("seq_scan_lower"), "bad_estimate");
    assert_eq!(
        (f.measured, f.severity, f.threshold),
        (100.0, Severity::Info, 10.0)
    );
    assert!(f.message.contains("overestimated"));
}

#[test]
fn slow_and_costly_nodes() {
    // 13.68 ms of 13.728 ms.
    let f = one(&findings("seq_scan_single"), "slow_node");
    assert!(close(f.measured, 13.68 / 13.728 * 100.0));
    assert_eq!(f.severity, Severity::Critical);
    // hash_join: the orders Seq Scan costs 4095 of the plan's 5197.11.
    let fs = findings("hash_join");
    let f = fs
        .iter()
        .find(|f| f.rule == "costly_node" && f.node_path == "0.0")
        .unwrap();
    assert!(close(f.measured, 4095.0 / 5197.11 * 100.0));
    assert_eq!((f.severity, f.threshold), (Severity::Warning, 40.0));
}

#[test]
fn baseline_rules() {
    let f = one(&findings("seq_scan_single"), "seq_scan");
    assert_eq!((f.severity, f.measured), (Severity::Info, 200_000.0));
    let f = one(&findings("disk_sort"), "high_total_cost");
    assert_eq!((f.node_path.as_str(), f.measured), ("0", 49_560.64));
    assert!(
        f.suggestion
            .starts_with("optimize the most expensive operations: Sort [0]")
    );
    let f = one(&findings("hash_join"), "large_hash_join");
    assert_eq!((f.node_path.as_str(), f.measured), ("0", 199_452.0));
    assert!(f.message.contains("(o.customer_id = c.id)"));
}

#[test]
fn clean_plan_fires_nothing_severe() {
    let fs = findings("clean");
    assert!(fs.iter().all(|f| f.severity == Severity::Info), "{fs:#?}");
    let fs = findings("update");
    assert!(fs.iter().all(|f| f.severity == Severity::Info), "{fs:#?}");
}

#[test]
fn findings_sorted_by_severity_then_impact() {
    let fs = findings("subplans");
    for w in fs.windows(2) {
        assert!(w[0].severity >= w[1].severity);
        if w[0].severity == w[1].severity {
            assert!(w[0].own_time_ms.unwrap_or(0.0) >= w[1].own_time_ms.unwrap_or(0.0));
        }
    }
    assert_eq!(fs[0].severity, Severity::Critical);
}

#[test]
fn thresholds_are_configurable_and_partial_json_keeps_defaults() {
    let th: Thresholds =
        serde_json::from_str(r#"{"hash_batches": 32, "large_offset_rows": {"info": null, "warning": 60000, "critical": null}}"#)
            .unwrap();
    assert_eq!(th.high_total_cost, 1000.0);
    assert!(
        analyze(&fixture("hash_batches"), &th)
            .iter()
            .all(|f| f.rule != "hash_batches")
    );
    assert!(
        analyze(&fixture("large_offset"), &th)
            .iter()
            .all(|f| f.rule != "large_offset")
    );
    let round: Thresholds = serde_json::from_str(&serde_json::to_string(&th).unwrap()).unwrap();
    assert_eq!(round, th);
}

#[test]
fn plan_without_analyze() {
    // EXPLAIN (FORMAT JSON) without ANALYZE: no actual figures, no time-based findings.
    let p = Plan::from_json(
        r#"[{"Plan": {"Node Type": "Hash Join", "Join Type": "Inner", "Startup Cost": 1.0,
            "Total Cost": 5197.11, "Plan Rows": 199452, "Plan Width": 13,
            "Hash Cond": "(o.customer_id = c.id)", "Plans": [
              {"Node Type": "Seq Scan", "Parent Relationship": "Outer",
               "Relation Name": "orders", "Total Cost": 4095.0, "Plan Rows": 200000, "Plan Width": 8},
              {"Node Type": "Hash", "Parent Relationship": "Inner", "Total Cost": 327.0,
               "Plan Rows": 20000, "Plan Width": 13}]}}]"#,
    )
    .unwrap();
    assert_eq!(p.execution_time_ms, None);
    let n = p.nodes();
    assert_eq!(n[0].own_time_ms, None);
    assert!(close(n[0].own_cost, 5197.11 - 4095.0 - 327.0));
    let fs = analyze(&p, &Thresholds::default());
    let rules: Vec<&str> = fs.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&"large_hash_join") && rules.contains(&"high_total_cost"));
    assert!(
        rules
            .iter()
            .all(|r| !["slow_node", "bad_estimate", "indexable_seq_scan"].contains(r))
    );
}

#[test]
fn unknown_node_types_and_fields_are_kept_or_ignored() {
    let p = Plan::from_json(
        r#"{"Plan": {"Node Type": "Shiny New Scan", "Total Cost": 1.0, "Plan Rows": 1,
            "Plan Width": 4, "Some Future Field": [1, 2]}, "Triggers": [
            {"Trigger Name": "RI_ConstraintTrigger_c_1", "Constraint Name": "fk", "Relation": "t",
             "Time": 1.5, "Calls": 3}]}"#,
    )
    .unwrap();
    assert_eq!(p.root.kind(), NodeKind::Other("Shiny New Scan".into()));
    assert_eq!(p.triggers[0].calls, 3);
    assert_eq!(p.triggers[0].constraint_name.as_deref(), Some("fk"));
    assert!(matches!(
        Plan::from_json("[]"),
        Err(crate::Error::EmptyPlan)
    ));
    assert!(matches!(
        Plan::from_json("{\"x\": 1}"),
        Err(crate::Error::PlanJson(_))
    ));
}

#[test]
fn nested_loop_inner_cost_counts_per_outer_row() {
    // 11358.36 - 4595.0 (outer) - 19,762 planned outer rows x 0.34 (inner) = 44.28.
    let p = fixture("nested_loop");
    assert!(close(
        p.nodes()[0].own_cost,
        11_358.36 - 4595.0 - 19_762.0 * 0.34
    ));
}

#[test]
fn summary_maxima() {
    let s = fixture("subplans").summary();
    assert_eq!(s.slowest.unwrap().0, "0.4.0");
    // The CTE's Seq Scan returns 200,000 rows; SubPlan 2's only 10 x 49.
    assert_eq!(s.largest_rows.unwrap(), ("0.0.0".to_string(), 200_000.0));
    assert_eq!(s.costliest.unwrap().0, "0.4.0");
}

// Pattern rules (plan/patterns.rs), on fixtures captured by the same script.

#[test]
fn partial_index_keeps_the_constant_in_the_predicate() {
    let f = one(&findings("partial_index"), "partial_index");
    assert_eq!(f.relation.as_deref(), Some("orders"));
    assert_eq!(f.measured, 200_000.0);
    assert_eq!(f.severity, Severity::Info);
    assert!(
        f.suggestion.contains(
            r#"CREATE INDEX CONCURRENTLY ON "orders" ("customer_id") WHERE "status" = 'paid';"#
        ),
        "{}",
        f.suggestion
    );
    // A single text equality has no other column to index: the plain index rule's job.
    assert!(
        findings("seq_scan_jsonb")
            .iter()
            .all(|f| f.rule != "partial_index")
    );
    assert!(
        findings("seq_scan_single")
            .iter()
            .all(|f| f.rule != "partial_index")
    );
}

#[test]
fn partial_index_respects_the_row_threshold() {
    let th = Thresholds {
        pattern_min_rows: 200_000.0,
        ..Thresholds::default()
    };
    let fs = analyze(&fixture("partial_index"), &th);
    assert!(fs.iter().all(|f| f.rule != "partial_index"));
}

#[test]
fn gin_index_for_jsonb_operators() {
    let f = one(&findings("jsonb_contains"), "gin_index");
    assert!(
        f.suggestion.starts_with(
            r#"CREATE INDEX CONCURRENTLY ON "orders" USING gin ("metadata" jsonb_path_ops);"#
        ),
        "{}",
        f.suggestion
    );
    assert_eq!(f.severity, Severity::Warning);
    let f = one(&findings("jsonb_exists"), "gin_index");
    assert_eq!(
        f.suggestion,
        r#"CREATE INDEX CONCURRENTLY ON "orders" USING gin ("metadata");"#
    );
    // `->>` equality is an expression index (indexable_seq_scan), not GIN.
    assert!(
        findings("seq_scan_jsonb")
            .iter()
            .all(|f| f.rule != "gin_index")
    );
}

#[test]
fn expression_index_for_lower_stays_with_indexable_seq_scan() {
    let fs = findings("seq_scan_lower");
    let f = one(&fs, "indexable_seq_scan");
    assert!(
        f.suggestion.contains(r#"(lower("name"))"#),
        "{}",
        f.suggestion
    );
    assert!(
        fs.iter()
            .all(|f| f.rule != "partial_index" && f.rule != "gin_index")
    );
}

#[test]
fn correlated_subplan_suggests_a_window_function() {
    let f = one(&findings("correlated_subplan"), "correlated_subplan");
    assert_eq!(
        (f.node_path.as_str(), f.node_type.as_str()),
        ("0.0", "Aggregate")
    );
    assert_eq!(f.measured, 1999.0);
    assert_eq!((f.severity, f.threshold), (Severity::Warning, 1000.0));
    assert!(f.suggestion.contains("window function"));
    // 49 runs in the subplans fixture stay under the threshold.
    assert!(
        findings("subplans")
            .iter()
            .all(|f| f.rule != "correlated_subplan")
    );
    let nl = one(&findings("nested_loop"), "nested_loop_loops");
    assert!(nl.suggestion.contains("window function"));
}

#[test]
fn materialized_view_for_a_heavy_grouped_aggregate() {
    let f = one(&findings("heavy_aggregate"), "materialized_view");
    assert_eq!(
        (f.node_path.as_str(), f.node_type.as_str()),
        ("0", "Aggregate")
    );
    assert!(close(f.measured, 79.836));
    assert!(
        f.suggestion
            .contains("REFRESH MATERIALIZED VIEW CONCURRENTLY")
    );
    assert!(f.suggestion.contains("CREATE UNIQUE INDEX"));
    assert!(f.message.contains("customer_id"), "{}", f.message);
    // Configurable: a higher time threshold leaves it out.
    let th = Thresholds {
        matview_min_ms: 100.0,
        ..Thresholds::default()
    };
    let fs = analyze(&fixture("heavy_aggregate"), &th);
    assert!(fs.iter().all(|f| f.rule != "materialized_view"));
    // An ungrouped count (time_range) is not a materialized view's job.
    assert!(
        findings("time_range")
            .iter()
            .all(|f| f.rule != "materialized_view")
    );
}

#[test]
fn partition_by_month_for_a_range_on_a_large_table() {
    let f = one(&findings("time_range"), "partition_by_month");
    assert_eq!(f.relation.as_deref(), Some("events"));
    assert_eq!(f.measured, 1_000_000.0);
    assert!(
        f.suggestion.contains(
            r#"CREATE TABLE "events_partitioned" (LIKE "events" INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE ("created_at");"#
        ),
        "{}",
        f.suggestion
    );
    assert!(
        f.suggestion.contains(
            r#"CREATE TABLE "events_2024_03" PARTITION OF "events_partitioned" FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');"#
        ),
        "{}",
        f.suggestion
    );
    let th = Thresholds {
        partition_min_rows: 1_000_001.0,
        ..Thresholds::default()
    };
    assert!(
        analyze(&fixture("time_range"), &th)
            .iter()
            .all(|f| f.rule != "partition_by_month")
    );
    // A numeric range is no timestamp.
    assert!(
        findings("seq_scan_range")
            .iter()
            .all(|f| f.rule != "partition_by_month")
    );
}

#[test]
fn pattern_parsing_helpers() {
    use super::patterns::conjuncts;
    assert_eq!(
        conjuncts("((status = 'paid'::text) AND (customer_id = 42))"),
        vec!["status = 'paid'::text", "customer_id = 42"]
    );
    assert_eq!(
        conjuncts("(a = 'x AND y'::text)"),
        vec!["a = 'x AND y'::text"]
    );
    assert_eq!(
        conjuncts("((a = 1) OR (b = 2))"),
        vec!["(a = 1) OR (b = 2)"]
    );
}

#[test]
fn quotes_in_names_and_constants_are_requoted() {
    let json = r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "Ord\"ers",
        "Total Cost": 4595.0, "Plan Rows": 10, "Plan Width": 4,
        "Actual Total Time": 17.6, "Actual Rows": 10, "Actual Loops": 1,
        "Filter": "((\"St\"\"x\" = 'it''s'::text) AND (customer_id = 42))",
        "Rows Removed by Filter": 199990}, "Execution Time": 17.7}]"#;
    let plan = Plan::from_json(json).unwrap();
    let fs = analyze(&plan, &Thresholds::default());
    let f = one(&fs, "partial_index");
    assert!(
        f.suggestion
            .contains(r#"ON "Ord""ers" ("customer_id") WHERE "St""x" = 'it''s';"#),
        "{}",
        f.suggestion
    );
}

#[test]
fn sql_lints() {
    let rules = |sql: &str| -> Vec<&'static str> { lint_sql(sql).iter().map(|l| l.rule).collect() };
    assert_eq!(rules("SELECT * FROM orders"), vec!["select_star"]);
    assert_eq!(
        rules("select distinct o.* from orders o"),
        vec!["select_star"]
    );
    assert!(rules("SELECT id, name FROM orders").is_empty());
    assert!(rules("SELECT count(*) FROM orders").is_empty());
    assert!(rules("SELECT 2 * 3, '*' FROM t -- SELECT *").is_empty());
    assert!(rules("SELECT o.*, c.name FROM o JOIN c ON true").is_empty());
    assert_eq!(
        rules("SELECT id FROM c WHERE (SELECT count(*) FROM o WHERE o.c = c.id) > 0"),
        vec!["count_for_existence"]
    );
    for sql in [
        "SELECT count(*) = 0 FROM o WHERE x = 1",
        "SELECT COUNT(1) >= 1 FROM o",
        "SELECT count(*) <> 0 FROM o",
        "SELECT count ( * ) > 0 FROM o",
    ] {
        assert_eq!(rules(sql), vec!["count_for_existence"], "{sql}");
    }
    assert!(rules("SELECT count(*) > 10 FROM o").is_empty());
    assert!(rules("SELECT k FROM o GROUP BY k HAVING count(*) > 0").is_empty());
    assert!(rules("SELECT 'count(*) > 0' AS s").is_empty());
    let l = &lint_sql("SELECT * FROM t")[0];
    assert_eq!(l.severity, Severity::Info);
    assert!(l.suggestion.contains("only the columns"));
}
