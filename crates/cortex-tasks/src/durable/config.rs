use std::time::Duration;

use cortex_metrics::env::EnvSource;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of a durable queue and of its workers.
///
/// Durations are (de)serialized as seconds, fractions allowed, like every Cortex setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DurableConfig {
    /// Queue name; keys live under `cortex:tasks:{name}:`. One to 64 characters out of
    /// `A-Z a-z 0-9 _ . -`. Default `"default"`.
    pub name: String,
    /// Consumer group every worker of this queue joins. Default `"workers"`.
    pub group: String,
    /// Tasks run at once per worker. Default 10.
    pub concurrency: usize,
    /// A delivered task idle this long (its worker stopped refreshing it) is reclaimed by
    /// another worker. Default 30 s.
    #[serde(with = "cortex_metrics::env::secs")]
    pub visibility_timeout: Duration,
    /// Attempts before a task is dead-lettered. Default 3.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts (`base * 2^(attempt-1)`, capped
    /// at 5 minutes). Default 1 s.
    #[serde(with = "cortex_metrics::env::secs")]
    pub retry_backoff: Duration,
    /// Status records expire this long after the task finished. Default 1 h.
    #[serde(with = "cortex_metrics::env::secs")]
    pub result_ttl: Duration,
    /// How long one read waits for new tasks (`XREADGROUP BLOCK`). Default 1 s.
    #[serde(with = "cortex_metrics::env::secs")]
    pub block: Duration,
    /// Most tasks taken per read (`XREADGROUP COUNT`). Default 64.
    pub batch: usize,
    /// Bound on every Redis call. Default 5 s.
    #[serde(with = "cortex_metrics::env::secs")]
    pub op_timeout: Duration,
    /// Bound on one attempt of a task; `None` (the default) for no bound.
    #[serde(with = "cortex_metrics::env::opt_secs")]
    pub task_timeout: Option<Duration>,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            group: "workers".to_owned(),
            concurrency: 10,
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            result_ttl: Duration::from_secs(3600),
            block: Duration::from_secs(1),
            batch: 64,
            op_timeout: Duration::from_secs(5),
            task_timeout: None,
        }
    }
}

impl DurableConfig {
    /// The defaults overridden by `TASKS_QUEUE_NAME`, `TASKS_CONCURRENCY`,
    /// `TASKS_VISIBILITY_TIMEOUT` (seconds) and `TASKS_MAX_ATTEMPTS`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when one does not parse or the result
    /// does not [`validate`](Self::validate).
    pub fn from_env() -> Result<Self> {
        Self::from_env_source(EnvSource::process())
    }

    /// As [`from_env`](Self::from_env), reading from any [`EnvSource`].
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_env_source(env: EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(name) = env.var("TASKS_QUEUE_NAME") {
            c.name = name.trim().to_owned();
        }
        if let Some(n) = env.parse::<usize>("TASKS_CONCURRENCY")? {
            c.concurrency = n;
        }
        if let Some(d) = env.secs("TASKS_VISIBILITY_TIMEOUT")? {
            c.visibility_timeout = d;
        }
        if let Some(n) = env.parse::<u32>("TASKS_MAX_ATTEMPTS")? {
            c.max_attempts = n;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first rejected setting.
    pub fn validate(&self) -> Result<()> {
        let valid_name = |s: &str| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                &self.name,
                "expected 1 to 64 characters out of A-Z a-z 0-9 _ . -",
            ));
        }
        if self.group.is_empty() || self.group.len() > 64 {
            return Err(invalid("group", &self.group, "expected 1 to 64 characters"));
        }
        let positive = [
            ("concurrency", self.concurrency as u128),
            ("batch", self.batch as u128),
            ("max_attempts", u128::from(self.max_attempts)),
            ("visibility_timeout", self.visibility_timeout.as_millis()),
            ("op_timeout", self.op_timeout.as_millis()),
            ("block", self.block.as_millis()),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(
                    key,
                    "0",
                    "must be at least 1 (milliseconds for durations)",
                ));
            }
        }
        if self.visibility_timeout < Duration::from_millis(30) {
            return Err(invalid(
                "visibility_timeout",
                &format!("{:?}", self.visibility_timeout),
                "must be at least 30 ms",
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
    fn env_overrides_and_validation() {
        let vars = HashMap::from([
            ("TASKS_QUEUE_NAME", "emails"),
            ("TASKS_CONCURRENCY", "4"),
            ("TASKS_VISIBILITY_TIMEOUT", "2.5"),
            ("TASKS_MAX_ATTEMPTS", "7"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = DurableConfig::from_env_source(EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.name, "emails");
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.visibility_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_attempts, 7);

        let bad = HashMap::from([("TASKS_QUEUE_NAME", "a b")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = DurableConfig::from_env_source(EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");

        let bad = HashMap::from([("TASKS_CONCURRENCY", "many")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = DurableConfig::from_env_source(EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("TASKS_CONCURRENCY"), "{err}");
    }

    #[test]
    fn serde_round_trip_uses_seconds() {
        let c = DurableConfig::default();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["visibility_timeout"], 30.0);
        let back: DurableConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let partial: DurableConfig = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(partial.concurrency, 10);
    }
}
