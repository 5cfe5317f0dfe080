use std::time::Duration;

use cortex_support::env::EnvSource;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of one [`Batcher`](crate::Batcher), i.e. of one batch type.
///
/// | field | variable (`<P>` = prefix) | default |
/// |---|---|---|
/// | `max_batch_size` | `<P>_BATCH_SIZE` | 50 |
/// | `max_wait` | `<P>_BATCH_WAIT`, s | 0.1 |
/// | `max_in_flight` | `<P>_BATCH_MAX_IN_FLIGHT` | 4 |
/// | `max_pending` | `<P>_BATCH_MAX_PENDING` | 10 000 |
/// | `request_timeout` | `<P>_BATCH_TIMEOUT`, s (0 = none) | 30 |
/// | `slow_batch` | `<P>_BATCH_SLOW`, s | 1 |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Most keys in one call of the loader; a full batch fires at once. Default: 50.
    pub max_batch_size: usize,
    /// Longest a request waits for its batch to fill while another batch is loading.
    /// An idle batcher does not wait at all. Default: 100 ms.
    #[serde(with = "cortex_support::duration::secs")]
    pub max_wait: Duration,
    /// Most batches loading at once; requests beyond queue (up to `max_pending`, each
    /// for at most `request_timeout`). Default: 4.
    pub max_in_flight: usize,
    /// Most requests queued for a batch; a load past it fails at once with
    /// [`Error::Saturated`] instead of queueing. Requests whose callers gave up still
    /// count until they are dropped from the queue. Default: 10 000 (50 rounds of the
    /// default 4 batches of 50).
    pub max_pending: usize,
    /// Longest a caller waits for its result before [`Error::Timeout`]; zero means no
    /// bound. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub request_timeout: Duration,
    /// A batch whose load takes longer than this is logged at WARN. Default: 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub slow_batch: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 50,
            max_wait: Duration::from_millis(100),
            max_in_flight: 4,
            max_pending: 10_000,
            request_timeout: Duration::from_secs(30),
            slow_batch: Duration::from_secs(1),
        }
    }
}

impl BatchConfig {
    /// Defaults overridden by `BATCH_SIZE`, `BATCH_WAIT`, ... (no prefix).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or is
    /// out of range.
    pub fn from_env() -> Result<Self> {
        Self::from_source("", &EnvSource::process())
    }

    /// Defaults overridden by `<prefix>_BATCH_SIZE`, `<prefix>_BATCH_WAIT`, ...: one
    /// prefix per batch type, e.g. `from_env_prefixed("USER_LOOKUP")`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_env_prefixed(prefix: &str) -> Result<Self> {
        Self::from_source(prefix, &EnvSource::process())
    }

    /// As [`from_env_prefixed`](Self::from_env_prefixed), from any [`EnvSource`]
    /// (an empty prefix reads the unprefixed names).
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_source(prefix: &str, env: &EnvSource<'_>) -> Result<Self> {
        let name = |suffix: &str| {
            if prefix.is_empty() {
                suffix.to_owned()
            } else {
                format!("{prefix}_{suffix}")
            }
        };
        let mut c = Self::default();
        if let Some(v) = count(env, name("BATCH_SIZE"))? {
            c.max_batch_size = v;
        }
        if let Some(v) = seconds(env, name("BATCH_WAIT"))? {
            c.max_wait = v;
        }
        if let Some(v) = count(env, name("BATCH_MAX_IN_FLIGHT"))? {
            c.max_in_flight = v;
        }
        if let Some(v) = count(env, name("BATCH_MAX_PENDING"))? {
            c.max_pending = v;
        }
        if let Some(v) = seconds(env, name("BATCH_TIMEOUT"))? {
            c.request_timeout = v;
        }
        if let Some(v) = seconds(env, name("BATCH_SLOW"))? {
            c.slow_batch = v;
        }
        c.validate_named(&name)?;
        Ok(c)
    }

    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `max_batch_size`, `max_in_flight` or `max_pending`
    /// is zero.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&|s: &str| s.to_owned())
    }

    fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        if self.max_batch_size == 0 {
            return Err(invalid(name("BATCH_SIZE"), "0", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                name("BATCH_MAX_IN_FLIGHT"),
                "0",
                "must be at least 1",
            ));
        }
        if self.max_pending == 0 {
            return Err(invalid(
                name("BATCH_MAX_PENDING"),
                "0",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn invalid(key: String, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn count(env: &EnvSource<'_>, key: String) -> Result<Option<usize>> {
    match env.var(&key) {
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            Ok(_) => Err(invalid(key, &v, "must be at least 1")),
            Err(e) => Err(invalid(key, &v, &e.to_string())),
        },
        None => Ok(None),
    }
}

fn seconds(env: &EnvSource<'_>, key: String) -> Result<Option<Duration>> {
    match env.var(&key) {
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Some)
            .ok_or_else(|| invalid(key, &v, "expected a non-negative number of seconds")),
        None => Ok(None),
    }
}
