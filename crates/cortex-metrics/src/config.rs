use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use cortex_support::{EnvSource, EnvVar, FromEnv};

/// Settings of a [`Metrics`](crate::Metrics) registry.
///
/// Read from the environment with [`MetricsConfig::from_env`]; the variables are listed
/// in [`FromEnv::VARS`] (and, from it, in the crate README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// How often [`Metrics::spawn_reset_task`](crate::Metrics::spawn_reset_task) starts a
    /// new window. Cumulative totals are never reset. Zero disables the task.
    ///
    /// Default: 3600 s (`METRICS_RESET_INTERVAL`).
    #[serde(with = "cortex_support::duration::secs")]
    pub reset_interval: Duration,
    /// Most distinct (method, route) series kept for HTTP endpoints, the overflow series
    /// included. Methods outside the standard nine count as one, `OTHER`; past the cap,
    /// requests of a new (method, route) pair are recorded under one series whose method
    /// and route are `(other)`, so a flood of odd paths or methods cannot grow memory
    /// without bound.
    ///
    /// Default: 1000 (`METRICS_MAX_ENDPOINTS`).
    pub max_endpoints: usize,
    /// Most distinct operation names, the overflow series included; beyond it, records
    /// of new names go to the operation `(other)`. The same number caps named
    /// histograms, counters and gauges, each kind on its own, and the label sets of
    /// each labeled name; categories, rolled up from operations, are never more than
    /// operations.
    ///
    /// Default: 10000 (`METRICS_MAX_OPERATIONS`).
    pub max_operations: usize,
    /// Prefix of every Prometheus metric name. Must match `[a-zA-Z_][a-zA-Z0-9_]*`.
    ///
    /// Default: `cortex` (`METRICS_NAMESPACE`).
    pub namespace: String,
    /// Upper bounds (`le`), in seconds, of the classic Prometheus histogram buckets of
    /// every duration family: operations, HTTP requests and
    /// [`histogram_seconds`](crate::Metrics::histogram_seconds) series. Ascending,
    /// finite, at least one; `+Inf` is always added. Counts are derived from the HDR
    /// buckets when scraped (see [`crate::prometheus`]), so the layout costs nothing
    /// when recording and can change between deployments.
    ///
    /// Default: [`DEFAULT_SECONDS_BUCKETS`] (`METRICS_HISTOGRAM_BUCKETS`, comma-separated).
    pub histogram_buckets: Vec<f64>,
    /// Upper bounds of the buckets of value histograms
    /// ([`Metrics::histogram`](crate::Metrics::histogram)), in the recorded unit.
    ///
    /// Default: [`DEFAULT_VALUE_BUCKETS`] (`METRICS_VALUE_BUCKETS`, comma-separated).
    pub value_buckets: Vec<f64>,
    /// Also export, beside each histogram, a summary of the current window (quantiles
    /// p50..p99.9, reset by [`Metrics::reset`](crate::Metrics::reset)), as the family
    /// `<histogram family>_window` (duration families: `..._window_seconds`).
    /// Quantiles cannot be aggregated across replicas: prefer the histograms.
    ///
    /// Default: `false` (`METRICS_EXPORT_SUMMARIES`).
    pub export_summaries: bool,
    /// Export the process gauges `process_resident_memory_bytes` and
    /// `process_virtual_memory_bytes` (read from `/proc/self/status` when scraped;
    /// Linux only, absent elsewhere).
    ///
    /// Default: `true` (`METRICS_EXPORT_PROCESS`).
    pub export_process: bool,
}

/// The default duration bucket layout, in seconds: 0.5 ms to 10 s in 1-2.5-5 steps.
pub const DEFAULT_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The default value bucket layout: 1 to 10^9 in 1-2.5-5 steps.
pub const DEFAULT_VALUE_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5,
    2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9,
];

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            reset_interval: Duration::from_secs(3600),
            max_endpoints: 1000,
            max_operations: 10_000,
            namespace: "cortex".to_owned(),
            histogram_buckets: DEFAULT_SECONDS_BUCKETS.to_vec(),
            value_buckets: DEFAULT_VALUE_BUCKETS.to_vec(),
            export_summaries: false,
            export_process: true,
        }
    }
}

impl FromEnv for MetricsConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "METRICS_RESET_INTERVAL",
            default: "1h",
            doc: "How often the reset task starts a new window (`0` = never); totals never reset.",
        },
        EnvVar {
            name: "METRICS_MAX_ENDPOINTS",
            default: "1000",
            doc: "Most (method, route) series; more go to one overflow series.",
        },
        EnvVar {
            name: "METRICS_MAX_OPERATIONS",
            default: "10000",
            doc: "Most operation names (and, each on its own, named histograms, counters, gauges, and label sets per name).",
        },
        EnvVar {
            name: "METRICS_NAMESPACE",
            default: "cortex",
            doc: "Prefix of every Prometheus name, `[a-zA-Z_][a-zA-Z0-9_]*`.",
        },
        EnvVar {
            name: "METRICS_HISTOGRAM_BUCKETS",
            default: "0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10",
            doc: "Bucket bounds (`le`, seconds, ascending, comma-separated) of duration histograms.",
        },
        EnvVar {
            name: "METRICS_VALUE_BUCKETS",
            default: "1,2.5,5,10,...,2.5e8,5e8,1e9",
            doc: "Bucket bounds of value histograms, in the recorded unit (default: 1 to 1e9 in 1-2.5-5 steps).",
        },
        EnvVar {
            name: "METRICS_EXPORT_SUMMARIES",
            default: "false",
            doc: "Also export window quantiles as `<family>_window` summaries.",
        },
        EnvVar {
            name: "METRICS_EXPORT_PROCESS",
            default: "true",
            doc: "Export `process_resident_memory_bytes` and `process_virtual_memory_bytes` (Linux).",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.duration("METRICS_RESET_INTERVAL")? {
            c.reset_interval = v;
        }
        c.max_endpoints = at_least_one(env, "METRICS_MAX_ENDPOINTS")?.unwrap_or(c.max_endpoints);
        c.max_operations = at_least_one(env, "METRICS_MAX_OPERATIONS")?.unwrap_or(c.max_operations);
        if let Some(v) = env.var("METRICS_NAMESPACE") {
            c.namespace = v;
        }
        if let Some(v) = env.var("METRICS_HISTOGRAM_BUCKETS") {
            c.histogram_buckets = parse_buckets("METRICS_HISTOGRAM_BUCKETS", &v)?;
        }
        if let Some(v) = env.var("METRICS_VALUE_BUCKETS") {
            c.value_buckets = parse_buckets("METRICS_VALUE_BUCKETS", &v)?;
        }
        if let Some(v) = env.bool("METRICS_EXPORT_SUMMARIES")? {
            c.export_summaries = v;
        }
        if let Some(v) = env.bool("METRICS_EXPORT_PROCESS")? {
            c.export_process = v;
        }
        c.validate()?;
        Ok(c)
    }
}

impl MetricsConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or is out
    /// of range.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero series cap or a namespace that is not a valid
    /// Prometheus name.
    pub fn validate(&self) -> Result<()> {
        if self.max_endpoints == 0 {
            return Err(invalid("METRICS_MAX_ENDPOINTS", "0", "must be at least 1"));
        }
        if self.max_operations == 0 {
            return Err(invalid("METRICS_MAX_OPERATIONS", "0", "must be at least 1"));
        }
        let mut chars = self.namespace.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                "METRICS_NAMESPACE",
                &self.namespace,
                "must match [a-zA-Z_][a-zA-Z0-9_]*",
            ));
        }
        check_buckets("METRICS_HISTOGRAM_BUCKETS", &self.histogram_buckets)?;
        check_buckets("METRICS_VALUE_BUCKETS", &self.value_buckets)?;
        Ok(())
    }
}

/// A comma-separated list of bucket bounds, checked here so that an error shows the
/// list as given (`"inf, 0"`), not as re-rendered from the parsed numbers (`"inf,0"`).
fn parse_buckets(key: &'static str, text: &str) -> Result<Vec<f64>> {
    let les = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| invalid(key, text, &format!("{:?} is not a number", part.trim())))
        })
        .collect::<Result<Vec<f64>>>()?;
    check_buckets_shown(key, &les, || text.to_owned())?;
    Ok(les)
}

/// Bounds must be finite, non-negative (values are unsigned) and strictly ascending.
fn check_buckets(key: &'static str, les: &[f64]) -> Result<()> {
    check_buckets_shown(key, les, || {
        les.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
    })
}

/// [`check_buckets`], showing `text()` as the value in an error.
fn check_buckets_shown(key: &'static str, les: &[f64], text: impl Fn() -> String) -> Result<()> {
    if les.is_empty() {
        return Err(invalid(key, "", "needs at least one bucket bound"));
    }
    if let Some(bad) = les.iter().find(|le| !le.is_finite() || **le < 0.0) {
        return Err(invalid(
            key,
            &text(),
            &format!("bound {bad} must be finite and not negative (+Inf is always added)"),
        ));
    }
    if let Some(w) = les.windows(2).find(|w| w[0] >= w[1]) {
        return Err(invalid(
            key,
            &text(),
            &format!("bounds must be strictly ascending: {} then {}", w[0], w[1]),
        ));
    }
    Ok(())
}

/// A count of at least 1 from `key`; a zero is refused here, where the value as given
/// (`"00"`, `" 0"`) is at hand for the error.
fn at_least_one(env: &EnvSource<'_>, key: &'static str) -> Result<Option<usize>> {
    match env.parse::<usize>(key)? {
        Some(0) => Err(invalid(
            key,
            &env.var(key).unwrap_or_default(),
            "must be at least 1",
        )),
        n => Ok(n),
    }
}

fn invalid(key: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Bounded CI time and no regression files written into the source tree.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Values near the valid ones (numbers, lists, flags, durations) and any text.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ ]?[-+]?[0-9]{0,3}(\\.[0-9]{0,2})?(e[0-9]{1,3})?(ms|s|m)?[ ]?",
            "[ ]?(0|00|1|-1|true|off|yes|inf|NaN|1e400|x|)(,[ ]?(0|1|0.5|2|inf|1e400|-1|x|)){0,4}",
            "[a-zA-Z_ -]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_values_give_a_config_or_an_error_naming_one_of_them(
            values in proptest::collection::vec(proptest::option::weighted(0.15, value()), MetricsConfig::VARS.len()),
        ) {
            let vars: HashMap<&str, String> = MetricsConfig::VARS
                .iter()
                .zip(values)
                .filter_map(|(v, value)| value.map(|value| (v.name, value)))
                .collect();
            let lookup = |k: &str| vars.get(k).cloned();
            match MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)) {
                Ok(c) => prop_assert!(c.validate().is_ok()),
                Err(Error::InvalidConfig { key, value, reason }) => {
                    prop_assert!(!reason.is_empty());
                    prop_assert_eq!(
                        vars.get(key).map(String::as_str),
                        Some(value.as_str()),
                        "{} is named with a value other than the one given ({})",
                        key,
                        reason
                    );
                }
                Err(e) => prop_assert!(false, "not InvalidConfig: {e}"),
            }
        }
    }

    #[test]
    fn env_overrides_and_errors_name_the_variable() {
        let vars = HashMap::from([
            ("METRICS_RESET_INTERVAL", "60"),
            ("METRICS_NAMESPACE", "svc"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.reset_interval, Duration::from_secs(60));
        assert_eq!(c.namespace, "svc");

        let bad = HashMap::from([("METRICS_NAMESPACE", "my-svc")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("METRICS_NAMESPACE"), "{err}");
        assert!(err.to_string().contains("my-svc"), "{err}");

        let vars = HashMap::from([
            ("METRICS_HISTOGRAM_BUCKETS", "0.01, 0.1,1"),
            ("METRICS_EXPORT_SUMMARIES", "yes"),
            ("METRICS_EXPORT_PROCESS", "off"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.histogram_buckets, vec![0.01, 0.1, 1.0]);
        assert!(c.export_summaries && !c.export_process);
        for bad in ["0.1,0.01", "0.1,x", "0.1,,1", "0.1,inf", "-1"] {
            let vars = HashMap::from([("METRICS_HISTOGRAM_BUCKETS", bad)]);
            let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
            let err = MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
            assert!(
                err.to_string().contains("METRICS_HISTOGRAM_BUCKETS"),
                "{err}"
            );
        }
    }

    #[test]
    fn errors_show_the_value_as_given() {
        // Seen failing before: the error showed "inf,0" and "0" instead of the values
        // as given.
        for (key, given) in [
            ("METRICS_VALUE_BUCKETS", "inf, 0"),
            ("METRICS_HISTOGRAM_BUCKETS", " 0.1 , 0.01"),
            ("METRICS_MAX_OPERATIONS", "00"),
            ("METRICS_MAX_ENDPOINTS", " 0"),
        ] {
            let lookup = |k: &str| (k == key).then(|| given.to_owned());
            let err = MetricsConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { key: k, value, .. } if *k == key && value == given),
                "{key}={given:?}: {err}"
            );
        }
    }

    #[test]
    fn the_readme_lists_every_variable() {
        cortex_support::env::check_readme(include_str!("../README.md"), MetricsConfig::VARS)
            .unwrap();
    }
}
