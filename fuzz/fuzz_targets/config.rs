//! The environment configs of every crate, read through `EnvSource` from arbitrary
//! values, and `parse_duration` on arbitrary text.
//!
//! Properties, beyond "no panic":
//! - with nothing set, every config is `Ok` (the defaults are valid);
//! - a config is `Ok`, or its error message names one of the config's variables;
//! - a `*_URL` variable whose value holds a password (one `redact_url` hides) never
//!   shows that value verbatim in the error;
//! - `parse_duration` answers `Ok` or a message; an accepted duration reads back the
//!   same when written as whole nanoseconds (`<n>ns`) and as `<secs>.<nanos>s`, and a
//!   bare number means the same as the number with `s`.
#![no_main]

use std::fmt::Display;
use std::time::Duration;

use cortex_support::duration::parse_duration;
use cortex_support::env::{EnvSource, FromEnv};
use cortex_support::redact::redact_url;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Variables to set: an index into the config's VARS list, and the value.
    vars: Vec<(u8, String)>,
    /// Free text for `parse_duration`.
    duration: String,
}

/// Read `T` from the variables of `input`, keyed by `T::VARS[index % len]`.
fn check<T: FromEnv>(input: &Input)
where
    T::Error: Display,
{
    let names: Vec<&str> = T::VARS.iter().map(|v| v.name).collect();
    assert!(!names.is_empty());
    let set: Vec<(&str, &str)> = input
        .vars
        .iter()
        .map(|(i, v)| (names[usize::from(*i) % names.len()], v.as_str()))
        .collect();
    // The last value of a variable wins, as a map insert would.
    let lookup = |k: &str| {
        set.iter()
            .rev()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    };
    let env = EnvSource::from_fn(&lookup);
    let Err(e) = T::from_env_source(&env) else {
        return;
    };
    let text = e.to_string();
    assert!(
        names.iter().any(|n| text.contains(n)),
        "{}: error names none of its variables: {text}\nset: {set:?}",
        std::any::type_name::<T>()
    );
    for (name, value) in &set {
        let trimmed = value.trim();
        // The same text set for a variable that is not a URL may be shown as its value.
        let elsewhere = set
            .iter()
            .any(|(n, v)| !n.ends_with("URL") && v.contains(trimmed));
        if name.ends_with("URL")
            && redact_url(trimmed) != trimmed
            && trimmed.len() >= 8
            && !elsewhere
        {
            assert!(
                !text.contains(trimmed),
                "{}: the error shows {name}'s password: {text}",
                std::any::type_name::<T>()
            );
        }
    }
}

/// Every config with nothing set is `Ok`.
fn defaults<T: FromEnv>()
where
    T::Error: Display,
{
    let none = |_: &str| None;
    if let Err(e) = T::from_env_source(&EnvSource::from_fn(&none)) {
        panic!("{} defaults rejected: {e}", std::any::type_name::<T>());
    }
}

fn check_duration(text: &str) {
    let Ok(d) = parse_duration(text) else {
        return;
    };
    let nanos = d.as_nanos();
    assert_eq!(
        parse_duration(&format!("{nanos}ns")),
        Ok(d),
        "{text:?} -> {d:?}"
    );
    let secs = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
    assert_eq!(parse_duration(&secs), Ok(d), "{text:?} -> {d:?} -> {secs}");
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        assert_eq!(parse_duration(&format!("{t}s")), Ok(d), "{text:?}");
    }
    // Never above what a Duration holds (the parser refuses an overflow).
    assert!(d <= Duration::MAX);
}

fn all(input: &Input) {
    check::<cortex_metrics::MetricsConfig>(input);
    check::<cortex_pool::DbConfig>(input);
    check::<cortex_pool::RedisConfig>(input);
    check::<cortex_pool::LimiterConfig>(input);
    check::<cortex_cache::MemoryConfig>(input);
    check::<cortex_cache::S3FifoConfig>(input);
    check::<cortex_cache::RedisCacheConfig>(input);
    check::<cortex_tasks::TaskQueueConfig>(input);
    check::<cortex_tasks::PriorityQueueConfig>(input);
    check::<cortex_tasks::durable::DurableConfig>(input);
    check::<cortex_batch::BatchConfig>(input);
    check::<cortex_profile::ProfilerConfig>(input);
    check::<cortex_profile::BaselineConfig>(input);
    check::<cortex_dbtune::advisor::AdviseOptions>(input);
}

fuzz_target!(|input: Input| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        defaults::<cortex_metrics::MetricsConfig>();
        defaults::<cortex_pool::DbConfig>();
        defaults::<cortex_pool::RedisConfig>();
        defaults::<cortex_pool::LimiterConfig>();
        defaults::<cortex_cache::MemoryConfig>();
        defaults::<cortex_cache::S3FifoConfig>();
        defaults::<cortex_cache::RedisCacheConfig>();
        defaults::<cortex_tasks::TaskQueueConfig>();
        defaults::<cortex_tasks::PriorityQueueConfig>();
        defaults::<cortex_tasks::durable::DurableConfig>();
        defaults::<cortex_batch::BatchConfig>();
        defaults::<cortex_profile::ProfilerConfig>();
        defaults::<cortex_profile::BaselineConfig>();
        defaults::<cortex_dbtune::advisor::AdviseOptions>();
    });
    all(&input);
    check_duration(&input.duration);
});
