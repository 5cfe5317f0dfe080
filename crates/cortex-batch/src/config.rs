use std::time::Duration;

use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of one [`Batcher`](crate::Batcher), i.e. of one batch type.
///
/// Read from the environment with [`BatchConfig::from_env`] (the names of
/// [`FromEnv::VARS`]: `BATCH_SIZE`, `BATCH_WAIT`, ...) or, one prefix per batch type,
/// [`BatchConfig::from_env_prefixed`] (`USER_LOOKUP_BATCH_SIZE`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Most keys in one call of the loader; a full batch fires at once. Default: 50.
    pub max_batch_size: usize,
    /// Longest a request waits for its batch to fill while another batch is loading.
    /// A bound, not the usual wait: an idle batcher does not wait at all, and while a
    /// loading slot is free a request goes as soon as the requests arriving with it
    /// are queued. Default: 100 ms.
    #[serde(with = "cortex_support::duration::secs")]
    pub max_wait: Duration,
    /// Most batches loading at once; requests beyond queue (up to `max_pending`, each
    /// for at most `request_timeout`). With a backend bound by latency this caps
    /// throughput at `max_in_flight * max_batch_size` requests per round trip, so it is
    /// set well above the batches a burst needs: default 16 (800 requests loading at
    /// once with the default size).
    pub max_in_flight: usize,
    /// Most requests queued for a batch; a load past it fails at once with
    /// [`Error::Saturated`] instead of queueing. Requests whose callers gave up still
    /// count until they are dropped from the queue. Default: 10 000 (200 full batches
    /// of the default 50).
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
            max_in_flight: 16,
            max_pending: 10_000,
            request_timeout: Duration::from_secs(30),
            slow_batch: Duration::from_secs(1),
        }
    }
}

impl FromEnv for BatchConfig {
    type Error = Error;

    /// The unprefixed names; [`BatchConfig::from_env_prefixed`] reads the same
    /// variables with `<PREFIX>_` in front.
    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "BATCH_SIZE",
            default: "50",
            doc: "Most keys in one call of the loader; a full batch fires at once.",
        },
        EnvVar {
            name: "BATCH_WAIT",
            default: "100ms",
            doc: "Longest a request waits for its batch to fill while another batch loads.",
        },
        EnvVar {
            name: "BATCH_MAX_IN_FLIGHT",
            default: "16",
            doc: "Most batches loading at once.",
        },
        EnvVar {
            name: "BATCH_MAX_PENDING",
            default: "10000",
            doc: "Most requests queued; a load past it fails at once with `Saturated`.",
        },
        EnvVar {
            name: "BATCH_TIMEOUT",
            default: "30s",
            doc: "Longest a caller waits for its result (`0` = no bound).",
        },
        EnvVar {
            name: "BATCH_SLOW",
            default: "1s",
            doc: "A load slower than this is logged at WARN.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        Self::from_env_source_prefixed("", env)
    }
}

impl BatchConfig {
    /// Defaults overridden by `BATCH_SIZE`, `BATCH_WAIT`, ... (no prefix; the
    /// variables of [`FromEnv::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or is
    /// out of range.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Defaults overridden by `<prefix>_BATCH_SIZE`, `<prefix>_BATCH_WAIT`, ...: one
    /// prefix per batch type, e.g. `from_env_prefixed("USER_LOOKUP")`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env); the error's `key` is the prefixed name.
    pub fn from_env_prefixed(prefix: &str) -> Result<Self> {
        Self::from_env_source_prefixed(prefix, &EnvSource::process())
    }

    /// As [`from_env_prefixed`](Self::from_env_prefixed), from any [`EnvSource`] (an
    /// empty prefix reads the unprefixed names, as
    /// [`from_env_source`](FromEnv::from_env_source)). Durations take the Cortex
    /// syntax: a bare number is seconds (`0.1`), or `100ms`, `30s`, `2m`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use cortex_batch::BatchConfig;
    /// use cortex_support::EnvSource;
    ///
    /// let vars = HashMap::from([("USERS_BATCH_SIZE", "20"), ("USERS_BATCH_WAIT", "5ms")]);
    /// let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    /// let c = BatchConfig::from_env_source_prefixed("USERS", &EnvSource::from_fn(&lookup))?;
    /// assert_eq!((c.max_batch_size, c.max_wait), (20, Duration::from_millis(5)));
    /// # Ok::<(), cortex_batch::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_env_source_prefixed(prefix: &str, env: &EnvSource<'_>) -> Result<Self> {
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
        if let Some(v) = duration(env, name("BATCH_WAIT"))? {
            c.max_wait = v;
        }
        if let Some(v) = count(env, name("BATCH_MAX_IN_FLIGHT"))? {
            c.max_in_flight = v;
        }
        if let Some(v) = count(env, name("BATCH_MAX_PENDING"))? {
            c.max_pending = v;
        }
        if let Some(v) = duration(env, name("BATCH_TIMEOUT"))? {
            c.request_timeout = v;
        }
        if let Some(v) = duration(env, name("BATCH_SLOW"))? {
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

// The keys are built at run time from the prefix, so these read with `EnvSource::var`
// rather than its `&'static str` parsers, and name the key in an owned error.
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

fn duration(env: &EnvSource<'_>, key: String) -> Result<Option<Duration>> {
    match env.var(&key) {
        Some(v) => cortex_support::duration::parse_duration(&v)
            .map(Some)
            .map_err(|reason| invalid(key, &v, &reason)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(prefix: &str, vars: &[(&str, &str)]) -> Result<BatchConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        BatchConfig::from_env_source_prefixed(prefix, &EnvSource::from_fn(&lookup))
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        let c = from(
            "",
            &[
                ("BATCH_WAIT", "5ms"),
                ("BATCH_TIMEOUT", "2"),
                ("BATCH_SLOW", "1m"),
            ],
        )
        .unwrap();
        assert_eq!(c.max_wait, Duration::from_millis(5));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.slow_batch, Duration::from_secs(60));
        let err = from("P", &[("P_BATCH_SLOW", "-1s")]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key, value, .. } if key == "P_BATCH_SLOW" && value == "-1s"),
            "{err}"
        );
    }

    #[test]
    fn from_env_source_reads_the_unprefixed_names() {
        let vars = HashMap::from([("BATCH_SIZE", "7"), ("USERS_BATCH_SIZE", "9")]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = BatchConfig::from_env_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!(c.max_batch_size, 7);
        let names: Vec<&str> = BatchConfig::VARS.iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 6);
        // Every listed variable is read: a bad value of each is refused.
        for name in names {
            let err = from("", &[(name, "bad")]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_readme_lists_every_variable() {
        cortex_support::env::check_readme(include_str!("../README.md"), BatchConfig::VARS).unwrap();
    }
}
