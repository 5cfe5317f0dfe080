//! Bad-input sweep of the scenario file parser and the configuration checks: arbitrary
//! text, every truncation of a valid scenario file, out-of-range numbers in every
//! field. Each must give a typed error naming the bad value or a configuration the run
//! can carry out (durations that fit on the clock), never a panic. The case count is
//! fixed so CI time is bounded and a failure reproduces; nothing is persisted.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{LoadConfig, LoadError, MAX_DURATION, MAX_USERS, Scenario};

const VALID_FILE: &str = r#"[
  {"name": "list", "endpoint": "/users?page=1", "weight": 3},
  {"name": "create", "endpoint": "/users", "method": "post",
   "payload": {"name": "a", "tags": [1, 2.5, null]},
   "headers": {"x-trace": "t-1"}, "weight": 0.5},
  {"name": "abs", "endpoint": "http://127.0.0.1:8080/health"}
]"#;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Parses scenario file text through [`Scenario::load_file`], as `--scenario-file`
/// does; a parse error must be `ScenarioFileJson` naming the file.
fn load(text: &str) -> Result<Vec<Scenario>, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenarios.json");
    std::fs::write(&path, text).unwrap();
    let result = Scenario::load_file(&path);
    if let Err(e) = &result {
        assert!(
            matches!(e, LoadError::ScenarioFileJson { .. }),
            "unexpected error kind for {text:?}: {e:?}"
        );
        assert!(e.to_string().contains("scenarios.json"), "{e}");
    }
    result
}

/// A configuration `plan()` accepts must be one the run can carry out: every duration
/// fits on the clock, and an open loop's gap between sends is bounded.
fn check_plan(c: &LoadConfig) -> Result<(), LoadError> {
    let result = c.plan().map(|_| ());
    if result.is_ok() {
        let now = Instant::now();
        for d in [c.duration, Some(c.ramp_up), c.think_time, Some(c.timeout)]
            .into_iter()
            .flatten()
        {
            assert!(now.checked_add(d).is_some(), "accepted {d:?}: {c:?}");
        }
        // A setting, not a measurement: the gap between sends that an accepted rate
        // asks for is itself a duration within the limit.
        if let Some(rate) = c.rate {
            let gap = Duration::try_from_secs_f64(1.0 / rate);
            assert!(
                gap.as_ref().is_ok_and(|gap| *gap <= MAX_DURATION),
                "accepted rate {rate}: gap {gap:?}"
            );
        }
    }
    result
}

/// Numbers and values of the wrong type for the numeric fields of a config.
fn bad_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(0.0)),
        Just(json!(-0.5)),
        Just(json!(1e-300)),
        Just(json!(1e300)),
        Just(json!(f64::MAX)),
        Just(json!(u32::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1.8e19)),
        Just(json!("NaN")),
        Just(json!("inf")),
        Just(json!("30s")),
        Just(json!("-1s")),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([])),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
    ]
}

const NUMERIC_FIELDS: &[&str] = &[
    "users",
    "requests_per_user",
    "duration",
    "rate",
    "ramp_up",
    "think_time",
    "timeout",
    "threads",
];

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text as a scenario file; what parses goes through the checks.
    #[test]
    fn arbitrary_scenario_files_never_panic(text in any::<String>()) {
        if let Ok(scenarios) = load(&text) {
            let _ = check_plan(&LoadConfig { scenarios, ..LoadConfig::default() });
        }
    }

    /// Scenario-shaped JSON with arbitrary strings and weights in every field.
    #[test]
    fn arbitrary_scenario_fields_never_panic(
        name in any::<String>(),
        endpoint in prop_oneof![any::<String>(), "/[ -~]{0,20}", "http://[ -~]{0,20}"],
        method in prop_oneof![any::<String>(), "[A-Za-z]{1,8}"],
        header in (any::<String>(), any::<String>()),
        weight in bad_number(),
    ) {
        let file = json!([{
            "name": name, "endpoint": endpoint, "method": method,
            "headers": {header.0: header.1}, "weight": weight,
        }]);
        if let Ok(scenarios) = load(&file.to_string()) {
            let _ = check_plan(&LoadConfig { scenarios, ..LoadConfig::default() });
        }
    }

    /// One numeric setting of a config file set to zero, negative, tiny, huge or the
    /// wrong type: a deserialization error, an error naming the setting, or a config
    /// the run can carry out.
    #[test]
    fn out_of_range_settings_are_named(
        field in prop::sample::select(NUMERIC_FIELDS),
        value in bad_number(),
    ) {
        let mut c = json!({
            "url": "http://127.0.0.1:1",
            "scenarios": [{"name": "a", "endpoint": "/"}],
            "users": 2, "requests_per_user": 3,
        });
        c[field] = value.clone();
        let Ok(config) = serde_json::from_value::<LoadConfig>(c) else {
            return Ok(());
        };
        if let Err(e) = check_plan(&config) {
            let text = e.to_string();
            let spaced = field.replace('_', " ");
            prop_assert!(
                text.contains(field) || text.contains(&spaced),
                "{field} = {value}: error does not name it: {text}"
            );
        }
    }
}

/// Every prefix of a valid scenario file is a `ScenarioFileJson` error (it is one JSON
/// document), and the whole file parses and passes the checks.
#[test]
fn every_truncation_of_a_scenario_file_is_an_error() {
    let full = VALID_FILE.trim_end();
    for (cut, _) in full.char_indices() {
        // Parse the prefix directly (a file per prefix would only add I/O).
        let prefix = &full[..cut];
        assert!(
            serde_json::from_str::<Vec<Scenario>>(prefix).is_err(),
            "prefix {prefix:?} parsed"
        );
    }
    let scenarios = load(full).unwrap();
    assert_eq!(scenarios.len(), 3);
    let c = LoadConfig {
        url: "http://127.0.0.1:8080".into(),
        scenarios,
        ..LoadConfig::default()
    };
    check_plan(&c).unwrap();
    // Truncations through the file path give the file-naming error.
    assert!(load(&full[..full.len() / 2]).is_err());
}

/// Regression inputs: values that passed the checks and then panicked or hung the run.
#[test]
fn values_the_run_cannot_carry_out_are_refused() {
    let base = LoadConfig {
        scenarios: vec![Scenario::get("/")],
        ..LoadConfig::default()
    };
    let huge = Duration::from_secs(u64::MAX);
    for (name, c) in [
        (
            "duration",
            LoadConfig {
                duration: Some(huge),
                ..base.clone()
            },
        ),
        (
            "ramp_up",
            LoadConfig {
                ramp_up: huge,
                ..base.clone()
            },
        ),
        (
            "think_time",
            LoadConfig {
                think_time: Some(huge),
                ..base.clone()
            },
        ),
        (
            "timeout",
            LoadConfig {
                timeout: huge,
                ..base.clone()
            },
        ),
        // One request per 3e292 years: a run with a request count never ends.
        (
            "rate",
            LoadConfig {
                rate: Some(1e-300),
                ..base.clone()
            },
        ),
    ] {
        match c.plan() {
            Err(LoadError::BadSetting { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: expected BadSetting, got {other:?}"),
        }
    }
    // Finite weights whose sum is infinite.
    let mut a = Scenario::get("/a");
    a.weight = f64::MAX;
    let c = LoadConfig {
        scenarios: vec![a.clone(), a],
        ..base.clone()
    };
    let err = c.plan().unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");
    // u32::MAX users: the run allocates per-user state for each before connecting.
    let c = LoadConfig {
        users: u32::MAX,
        ..base.clone()
    };
    match c.plan() {
        Err(e @ LoadError::BadSetting { name: "users", .. }) => {
            assert!(e.to_string().contains(&u32::MAX.to_string()), "{e}");
        }
        other => panic!("users: expected BadSetting, got {other:?}"),
    }
    // The limits themselves are accepted.
    let c = LoadConfig {
        duration: Some(MAX_DURATION),
        users: MAX_USERS,
        ..base
    };
    c.plan().unwrap();
}
