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
    /// histograms and counters, each on its own; categories, rolled up from
    /// operations, are never more than operations.
    ///
    /// Default: 10000 (`METRICS_MAX_OPERATIONS`).
    pub max_operations: usize,
    /// Prefix of every Prometheus metric name. Must match `[a-zA-Z_][a-zA-Z0-9_]*`.
    ///
    /// Default: `cortex` (`METRICS_NAMESPACE`).
    pub namespace: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            reset_interval: Duration::from_secs(3600),
            max_endpoints: 1000,
            max_operations: 10_000,
            namespace: "cortex".to_owned(),
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
            doc: "Most operation names (and, each on its own, named histograms and counters).",
        },
        EnvVar {
            name: "METRICS_NAMESPACE",
            default: "cortex",
            doc: "Prefix of every Prometheus name, `[a-zA-Z_][a-zA-Z0-9_]*`.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.duration("METRICS_RESET_INTERVAL")? {
            c.reset_interval = v;
        }
        if let Some(v) = env.parse("METRICS_MAX_ENDPOINTS")? {
            c.max_endpoints = v;
        }
        if let Some(v) = env.parse("METRICS_MAX_OPERATIONS")? {
            c.max_operations = v;
        }
        if let Some(v) = env.var("METRICS_NAMESPACE") {
            c.namespace = v;
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
        Ok(())
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
    use std::collections::HashMap;

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
    }

    #[test]
    fn the_readme_lists_every_variable() {
        cortex_support::env::check_readme(include_str!("../README.md"), MetricsConfig::VARS)
            .unwrap();
    }
}
