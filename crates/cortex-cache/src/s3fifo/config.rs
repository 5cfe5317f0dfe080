use std::time::Duration;

use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of a typed in-memory [`S3FifoCache`](crate::S3FifoCache), handed to
/// [`S3FifoCacheBuilder::config`](crate::S3FifoCacheBuilder::config).
///
/// Read from the environment with [`S3FifoConfig::from_env`]; the variables are listed
/// in [`FromEnv::VARS`] (and, from it, in the crate README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3FifoConfig {
    /// Most entries. Default: 10000 (`CACHE_S3FIFO_CAPACITY`).
    pub capacity: usize,
    /// Expiry of entries inserted without their own TTL; `None` keeps them until
    /// evicted. Default: none (`CACHE_S3FIFO_TTL`, `0` = none).
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub ttl: Option<Duration>,
    /// Shard count; `None` picks one from the CPUs. Default: automatic
    /// (`CACHE_S3FIFO_SHARDS`, `0` = automatic).
    pub shards: Option<usize>,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl: None,
            shards: None,
        }
    }
}

impl FromEnv for S3FifoConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "CACHE_S3FIFO_CAPACITY",
            default: "10000",
            doc: "Most entries of an `S3FifoCache` built from this config.",
        },
        EnvVar {
            name: "CACHE_S3FIFO_TTL",
            default: "unset",
            doc: "Expiry of entries inserted without their own TTL (`0` or unset = none).",
        },
        EnvVar {
            name: "CACHE_S3FIFO_SHARDS",
            default: "unset",
            doc: "Shard count (`0` or unset = from the CPUs).",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("CACHE_S3FIFO_CAPACITY")? {
            c.capacity = v;
        }
        if let Some(v) = env.duration("CACHE_S3FIFO_TTL")? {
            c.ttl = (!v.is_zero()).then_some(v);
        }
        if let Some(v) = env.parse::<usize>("CACHE_S3FIFO_SHARDS")? {
            c.shards = (v != 0).then_some(v);
        }
        c.validate()?;
        Ok(c)
    }
}

impl S3FifoConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or the
    /// capacity is zero.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero capacity, TTL or shard count.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, reason: &str| Error::InvalidConfig {
            key,
            value: "0".to_owned(),
            reason: reason.to_owned(),
        };
        if self.capacity == 0 {
            return Err(bad("CACHE_S3FIFO_CAPACITY", "must be at least 1"));
        }
        if self.ttl.is_some_and(|t| t.is_zero()) {
            return Err(bad("CACHE_S3FIFO_TTL", "must be more than zero (or none)"));
        }
        if self.shards == Some(0) {
            return Err(bad(
                "CACHE_S3FIFO_SHARDS",
                "must be at least 1 (or automatic)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<S3FifoConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        S3FifoConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn config_from_a_map_and_errors_name_the_variable() {
        assert_eq!(from(&[]).unwrap(), S3FifoConfig::default());
        let c = from(&[
            ("CACHE_S3FIFO_CAPACITY", "500"),
            ("CACHE_S3FIFO_TTL", "2.5"),
        ])
        .unwrap();
        assert_eq!(
            (c.capacity, c.ttl, c.shards),
            (500, Some(Duration::from_millis(2500)), None)
        );
        for (k, v) in [
            ("CACHE_S3FIFO_CAPACITY", "lots"),
            ("CACHE_S3FIFO_CAPACITY", "0"),
            ("CACHE_S3FIFO_TTL", "soon"),
            ("CACHE_S3FIFO_SHARDS", "-1"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
            assert!(!err.is_retryable());
        }
    }
}
