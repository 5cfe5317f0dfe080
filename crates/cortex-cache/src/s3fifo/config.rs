use cortex_support::env::EnvSource;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of a typed in-memory [`LruCache`](crate::LruCache).
///
/// | field | variable | default |
/// |---|---|---|
/// | `capacity` | `CACHE_LRU_CAPACITY` | 10000 |
/// | `ttl` | `CACHE_LRU_TTL`, s (0 = none) | none |
/// | `shards` | `CACHE_LRU_SHARDS` (0 = automatic) | automatic |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LruCacheConfig {
    /// Most entries. Default: 10000.
    pub capacity: usize,
    /// Expiry of entries inserted without their own TTL, in seconds; `None` keeps them
    /// until evicted. Default: none.
    pub ttl_secs: Option<f64>,
    /// Shard count; `None` picks one from the CPUs. Default: automatic.
    pub shards: Option<usize>,
}

impl Default for LruCacheConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl_secs: None,
            shards: None,
        }
    }
}

impl LruCacheConfig {
    /// Defaults overridden by the environment (see the table above).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or the
    /// capacity is zero.
    pub fn from_env() -> Result<Self> {
        Self::from_source(&EnvSource::process())
    }

    /// As [`from_env`](Self::from_env), from any [`EnvSource`].
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("CACHE_LRU_CAPACITY")? {
            c.capacity = v;
        }
        if let Some(v) = env.duration("CACHE_LRU_TTL")? {
            c.ttl_secs = (!v.is_zero()).then_some(v.as_secs_f64());
        }
        if let Some(v) = env.parse::<usize>("CACHE_LRU_SHARDS")? {
            c.shards = (v != 0).then_some(v);
        }
        if c.capacity == 0 {
            return Err(Error::InvalidConfig {
                key: "CACHE_LRU_CAPACITY",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod lru_config_tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn lru_config_from_a_map_and_errors_name_the_variable() {
        let vars = HashMap::from([("CACHE_LRU_CAPACITY", "500"), ("CACHE_LRU_TTL", "2.5")]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let c = LruCacheConfig::from_source(&EnvSource::from_fn(&lookup)).unwrap();
        assert_eq!((c.capacity, c.ttl_secs, c.shards), (500, Some(2.5), None));
        let bad = HashMap::from([("CACHE_LRU_CAPACITY", "lots")]);
        let lookup = |k: &str| bad.get(k).map(|v| v.to_string());
        let err = LruCacheConfig::from_source(&EnvSource::from_fn(&lookup)).unwrap_err();
        assert!(err.to_string().contains("CACHE_LRU_CAPACITY"), "{err}");
    }
}
