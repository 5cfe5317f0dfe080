//! Bad-input sweep of the EXPLAIN JSON parser: arbitrary text, every truncation of the
//! captured fixtures, wrong types and out-of-range numbers in every field, deep nesting.
//! Each input must give `Ok` or a typed [`Error`], and a plan that parses must go
//! through the derived figures and the rules without a panic. The case count is fixed
//! so CI time is bounded and a failure reproduces; nothing is persisted into the tree.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Every fixture the rule tests use, as captured text.
const FIXTURES: &[&str] = &[
    include_str!("../../tests/fixtures/clean.json"),
    include_str!("../../tests/fixtures/correlated_subplan.json"),
    include_str!("../../tests/fixtures/disk_sort.json"),
    include_str!("../../tests/fixtures/hash_batches.json"),
    include_str!("../../tests/fixtures/hash_join.json"),
    include_str!("../../tests/fixtures/heap_fetches.json"),
    include_str!("../../tests/fixtures/heavy_aggregate.json"),
    include_str!("../../tests/fixtures/jsonb_contains.json"),
    include_str!("../../tests/fixtures/jsonb_exists.json"),
    include_str!("../../tests/fixtures/large_offset.json"),
    include_str!("../../tests/fixtures/lossy_bitmap.json"),
    include_str!("../../tests/fixtures/nested_loop.json"),
    include_str!("../../tests/fixtures/parallel.json"),
    include_str!("../../tests/fixtures/partial_index.json"),
    include_str!("../../tests/fixtures/seq_scan_jsonb.json"),
    include_str!("../../tests/fixtures/seq_scan_lower.json"),
    include_str!("../../tests/fixtures/seq_scan_multi.json"),
    include_str!("../../tests/fixtures/seq_scan_range.json"),
    include_str!("../../tests/fixtures/seq_scan_single.json"),
    include_str!("../../tests/fixtures/stale_stats.json"),
    include_str!("../../tests/fixtures/subplans.json"),
    include_str!("../../tests/fixtures/time_range.json"),
    include_str!("../../tests/fixtures/update.json"),
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs everything a caller does with a parsed plan; a panic anywhere fails the test.
fn exercise(plan: &Plan) {
    let nodes = plan.nodes();
    assert!(!nodes.is_empty(), "a parsed plan has a root");
    let _ = plan.summary();
    let _ = plan.total_time_ms();
    let _ = analyze(plan, &Thresholds::default());
}

/// Parses text and exercises the result; the error must be one of the parse errors.
fn check_text(text: &str) {
    match Plan::from_json(text) {
        Ok(plan) => exercise(&plan),
        Err(Error::PlanJson(_) | Error::EmptyPlan) => {}
        Err(other) => panic!("unexpected error kind for {text:?}: {other:?}"),
    }
}

fn check_value(value: Value) {
    let shown = value.to_string();
    match Plan::from_value(value) {
        Ok(plan) => exercise(&plan),
        Err(Error::PlanJson(e)) => {
            // The message names what was wrong (type or field), not just "error".
            assert!(!e.to_string().is_empty(), "empty message for {shown}");
        }
        Err(Error::EmptyPlan) => {}
        Err(other) => panic!("unexpected error kind for {shown}: {other:?}"),
    }
}

/// Values that are the wrong type or out of range for some field of a plan node.
fn bad_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(f64::MAX)),
        Just(Value::from(-f64::MAX)),
        Just(Value::from(1e-308)),
        any::<f64>().prop_map(Value::from), // NaN/inf become null
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("NaN")),
        Just(Value::from("1e400")),
        Just(Value::from("12.5")),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
        Just(serde_json::json!([{"Node Type": 1}])),
    ]
}

/// Every path (object key or array index) to a value in `v`, depth first.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                prefix.push(PathStep::Key(k.clone()));
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(mut v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    for step in path {
        v = match step {
            PathStep::Key(k) => v.get_mut(k.as_str()).expect("path from paths()"),
            PathStep::Index(i) => v.get_mut(*i).expect("path from paths()"),
        };
    }
    v
}

/// Node fields that must be numbers; each set to each bad leaf in turn.
const NUMERIC_FIELDS: &[&str] = &[
    "Startup Cost",
    "Total Cost",
    "Plan Rows",
    "Plan Width",
    "Actual Startup Time",
    "Actual Total Time",
    "Actual Rows",
    "Actual Loops",
    "Workers Planned",
    "Workers Launched",
    "Rows Removed by Filter",
    "Hash Batches",
    "Original Hash Batches",
    "Heap Fetches",
    "Exact Heap Blocks",
    "Lossy Heap Blocks",
    "Shared Hit Blocks",
    "Shared Read Blocks",
    "Local Read Blocks",
    "Temp Read Blocks",
    "Temp Written Blocks",
    "Sort Space Used",
    "Peak Memory Usage",
];

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text (mostly not JSON at all).
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_text(&text);
    }

    /// Arbitrary bytes, decoded lossily as a caller reading a file would.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    /// A fixture with any one value (node field, key list, child, the array) replaced by
    /// a value of the wrong type or out of range.
    #[test]
    fn any_field_replaced_never_panics(
        fixture in 0..FIXTURES.len(),
        pick in any::<prop::sample::Index>(),
        leaf in bad_leaf(),
    ) {
        let mut value: Value = serde_json::from_str(FIXTURES[fixture]).unwrap();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        *at_mut(&mut value, &path) = leaf;
        check_value(value);
    }

    /// Every node of a fixture gets the same numeric field set to a bad value: negative
    /// costs and rows, zero loops, u64::MAX block counts that overflow when summed.
    #[test]
    fn numeric_fields_out_of_range_never_panic(
        fixture in 0..FIXTURES.len(),
        field in prop::sample::select(NUMERIC_FIELDS),
        leaf in bad_leaf(),
    ) {
        let mut value: Value = serde_json::from_str(FIXTURES[fixture]).unwrap();
        // Children first, so the inserted value (which may itself look like a node) is
        // not walked again.
        fn set_all(v: &mut Value, field: &str, leaf: &Value) {
            match v {
                Value::Object(m) => m.values_mut().for_each(|c| set_all(c, field, leaf)),
                Value::Array(a) => a.iter_mut().for_each(|c| set_all(c, field, leaf)),
                _ => {}
            }
            if let Some(m) = v.as_object_mut()
                && m.contains_key("Node Type")
            {
                m.insert(field.to_string(), leaf.clone());
            }
        }
        set_all(&mut value, field, &leaf);
        check_value(value.clone());
        // The same as text, through the string entry point.
        check_text(&value.to_string());
    }

    /// Plans nested `depth` levels deep through "Plans", past serde_json's recursion
    /// limit: an error (or a plan), never a stack overflow.
    #[test]
    fn deep_nesting_never_overflows(depth in 1usize..2000) {
        let node = |inner: &str| {
            format!(r#"{{"Node Type":"Result","Total Cost":1,"Plan Rows":1,"Plans":[{inner}]}}"#)
        };
        let mut text = r#"{"Node Type":"Result","Total Cost":1,"Plan Rows":1}"#.to_string();
        for _ in 0..depth {
            text = node(&text);
        }
        check_text(&format!(r#"[{{"Plan":{text}}}]"#));
    }
}

/// Every prefix of every fixture (the file cut short at each character): no panic, and
/// every strict prefix is an error (a captured plan is one JSON document).
#[test]
fn every_truncation_of_every_fixture_is_an_error() {
    let mut tried = 0usize;
    for text in FIXTURES {
        let full = text.trim_end();
        for (cut, _) in full.char_indices() {
            let prefix = &full[..cut];
            assert!(
                Plan::from_json(prefix).is_err(),
                "prefix of {} bytes parsed",
                prefix.len()
            );
            tried += 1;
        }
        check_text(full);
    }
    assert!(tried > 10_000, "the fixtures cover {tried} prefixes");
}

/// Block counters at u64::MAX in every field a sum reads (shared, local and temp reads):
/// the plan summary must not overflow.
#[test]
fn huge_block_counts_do_not_overflow() {
    let text = format!(
        r#"[{{"Plan": {{"Node Type": "Seq Scan", "Relation Name": "t", "Total Cost": 1,
            "Plan Rows": 1, "Shared Read Blocks": {m}, "Local Read Blocks": {m},
            "Temp Read Blocks": {m}, "Shared Hit Blocks": {m}}}}}]"#,
        m = u64::MAX
    );
    let plan = Plan::from_json(&text).unwrap();
    exercise(&plan);
    assert_eq!(plan.root.buffers.blocks_read(), u64::MAX);
}
