//! The EXPLAIN (FORMAT JSON) parser of cortex-dbtune on arbitrary text.
//!
//! Properties, beyond "no panic":
//! - the result is `Ok` or one of the parse errors (`PlanJson`, `EmptyPlan`);
//! - a parsed plan has a root, and everything derived from it (node walk, summary,
//!   total time, the rule engine's findings) runs without a panic;
//! - print then parse is stable: the plan serialized back to JSON parses to exactly
//!   the same plan, every number to the bit (the workspace turns on serde_json's
//!   `float_roundtrip`, whose parsing gives the nearest `f64`);
//! - the SQL lints accept any text.
#![no_main]

use cortex_dbtune::Error;
use cortex_dbtune::plan::{Plan, Thresholds, analyze, lint_sql};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = lint_sql(&text);
    let plan = match Plan::from_json(&text) {
        Ok(plan) => plan,
        Err(Error::PlanJson(_) | Error::EmptyPlan) => return,
        Err(other) => panic!("unexpected error kind: {other:?}"),
    };
    assert!(!plan.nodes().is_empty(), "a parsed plan has a root");
    let _ = plan.summary();
    let _ = plan.total_time_ms();
    let _ = analyze(&plan, &Thresholds::default());

    let printed = serde_json::to_string(&plan).expect("a parsed plan serializes");
    let again = Plan::from_json(&printed).unwrap_or_else(|e| {
        panic!(
            "printed plan does not parse: {e:?}
{printed}"
        )
    });
    let (a, b) = (
        serde_json::to_value(&plan).expect("serializes"),
        serde_json::to_value(&again).expect("serializes"),
    );
    assert!(
        a == b,
        "parse(print(plan)) != plan
{a}
{b}"
    );
});
