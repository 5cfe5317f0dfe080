//! The cortex-load scenario file (a JSON list of scenarios, as `--scenario-file` reads
//! it) and the whole JSON config, on arbitrary bytes, through the public checks of
//! `LoadTest::new` (which builds the run plan without connecting).
//!
//! Properties, beyond "no panic":
//! - parsing gives scenarios or a serde error; print then parse gives exactly the same
//!   scenarios back, every number to the bit (the workspace turns on serde_json's
//!   `float_roundtrip`, whose parsing gives the nearest `f64`);
//! - a config `LoadTest::new` accepts is one the run can carry out: users in
//!   1..=MAX_USERS, every duration at most MAX_DURATION, a positive timeout, a finite
//!   positive rate not below one request per MAX_DURATION, at least one scenario, every
//!   weight finite and > 0 and their sum finite;
//! - a refused config's error message is not empty.
#![no_main]

use cortex_load::{LoadConfig, LoadTest, MAX_DURATION, MAX_USERS, Scenario};
use libfuzzer_sys::fuzz_target;

fn check_accepted(c: &LoadConfig) {
    match LoadTest::new(c.clone()) {
        Err(e) => assert!(!e.to_string().is_empty(), "empty error for {c:?}"),
        Ok(_) => {
            assert!((1..=MAX_USERS).contains(&c.users), "users {}", c.users);
            for d in [c.duration, Some(c.ramp_up), c.think_time, Some(c.timeout)]
                .into_iter()
                .flatten()
            {
                assert!(d <= MAX_DURATION, "accepted {d:?}: {c:?}");
            }
            assert!(!c.timeout.is_zero(), "zero timeout accepted");
            if let Some(rate) = c.rate {
                assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
                assert!(1.0 / rate <= MAX_DURATION.as_secs_f64(), "rate {rate}");
            }
            assert!(c.duration.is_some() || c.requests_per_user > 0);
            assert!(!c.scenarios.is_empty());
            let mut sum = 0.0;
            for s in &c.scenarios {
                assert!(
                    s.weight.is_finite() && s.weight > 0.0,
                    "weight {}",
                    s.weight
                );
                sum += s.weight;
            }
            assert!(sum.is_finite(), "weights sum to {sum}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(scenarios) = serde_json::from_slice::<Vec<Scenario>>(body) else {
            return;
        };
        let printed = serde_json::to_string(&scenarios).expect("scenarios serialize");
        let again: Vec<Scenario> = serde_json::from_str(&printed)
            .unwrap_or_else(|e| panic!("printed scenarios do not parse: {e}\n{printed}"));
        let (a, b) = (
            serde_json::to_value(&scenarios).expect("serializes"),
            serde_json::to_value(&again).expect("serializes"),
        );
        assert!(a == b, "parse(print(x)) != x\n{a}\n{b}");
        check_accepted(&LoadConfig {
            url: "http://127.0.0.1:8080/base".into(),
            scenarios,
            ..LoadConfig::default()
        });
    } else if let Ok(config) = serde_json::from_slice::<LoadConfig>(body) {
        check_accepted(&config);
    }
});
