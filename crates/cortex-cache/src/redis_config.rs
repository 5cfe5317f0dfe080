use std::time::Duration;

use cortex_support::keyspace::{Component, check_prefix};
use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of a [`RedisCache`](crate::RedisCache).
///
/// Read from the environment with [`RedisCacheConfig::from_env`]; the variables are
/// listed in [`FromEnv::VARS`] (and, from it, in the crate README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisCacheConfig {
    /// Prefix of every key this cache reads, writes and clears, and of its
    /// invalidation channel (`<namespace>__invalidate`, for a
    /// [`TwoTierCache`](crate::TwoTierCache)). It must end in `:` and must not reach
    /// into keys of another Cortex component: anything under `cortex:` other than
    /// `cortex:cache:…` is refused (see [`cortex_support::keyspace`]), so `clear` can never
    /// delete a durable queue's `cortex:tasks:…` keys, and `app:` never clears `app2:…`.
    /// On a Redis Cluster the keys spread over every master by their whole name; a
    /// namespace holding a whole hash tag (`app:{users}:`) keeps them all in one slot
    /// instead, and one with a `{` it does not close is refused. Default: `cortex:cache:`.
    pub namespace: String,
    /// Expiry of a `set` given no TTL, and of a counter `increment` creates.
    /// Default: 300 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub default_ttl: Duration,
    /// Answer reads that meet a Redis fault as misses (`get` → `None`, `get_many` → all
    /// `None`, `exists` → `false`), logging the fault at most once a second, so a Redis
    /// outage slows the service instead of failing it. Writes (`set`, `set_many`),
    /// `delete`, `clear` and `increment` return their errors whatever this says: a
    /// write or an invalidation that did not land must not look as if it did.
    /// Off, reads return their errors too. Default: true.
    pub degrade_on_error: bool,
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            namespace: Component::Cache.reserved_prefix().to_owned(),
            default_ttl: Duration::from_secs(300),
            degrade_on_error: true,
        }
    }
}

impl FromEnv for RedisCacheConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "CACHE_NAMESPACE",
            default: "cortex:cache:",
            doc: "Prefix of every key of a `RedisCache`; ends in `:`, not `cortex:` nor another component's prefix.",
        },
        EnvVar {
            name: "CACHE_DEFAULT_TTL",
            default: "5m",
            doc: "Expiry of a `set` given no TTL, and of a counter `increment` creates.",
        },
        EnvVar {
            name: "CACHE_DEGRADE_ON_ERROR",
            default: "true",
            doc: "Answer reads that meet a Redis fault as misses (writes and deletes always return errors).",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.var("CACHE_NAMESPACE") {
            c.namespace = v;
        }
        if let Some(v) = env.duration("CACHE_DEFAULT_TTL")? {
            c.default_ttl = v;
        }
        if let Some(v) = env.bool("CACHE_DEGRADE_ON_ERROR")? {
            c.degrade_on_error = v;
        }
        c.validate()?;
        Ok(c)
    }
}

impl RedisCacheConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first bad value.
    pub fn validate(&self) -> Result<()> {
        check_namespace(&self.namespace)?;
        if self.default_ttl < Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                key: "CACHE_DEFAULT_TTL",
                value: format!("{}", self.default_ttl.as_secs_f64()),
                reason: "must be at least 0.001 s".to_owned(),
            });
        }
        Ok(())
    }
}

/// Refuses a namespace that could reach keys this cache does not own (see
/// [`cortex_support::keyspace::check_prefix`]).
///
/// Also refuses a `{` without a `}` after it: on a Redis Cluster only the part of a key
/// inside its first `{...}` is hashed, so such a namespace would make the hash tag of
/// every key run into the caller's key. A namespace with a whole tag (`app:{users}:`)
/// is accepted: it puts the whole namespace in one hash slot, on one master.
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidConfig {
        key: "CACHE_NAMESPACE",
        value: namespace.to_owned(),
        reason,
    };
    check_prefix(Component::Cache, namespace).map_err(|e| bad(e.to_string()))?;
    if let Some(open) = namespace.find('{')
        && !namespace[open..].contains('}')
    {
        return Err(bad(
            "opens a hash tag `{` it does not close; close it (`app:{users}:`) or leave braces to the keys"
                .to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<RedisCacheConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        RedisCacheConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(from(&[]).unwrap(), RedisCacheConfig::default());
        let c = from(&[("CACHE_NAMESPACE", "app:"), ("CACHE_DEFAULT_TTL", "1.5")]).unwrap();
        assert_eq!(c.namespace, "app:");
        assert_eq!(c.default_ttl, Duration::from_millis(1500));
        for (k, v) in [
            ("CACHE_NAMESPACE", "a b:"),
            ("CACHE_NAMESPACE", "a\u{7}:"),
            // A prefix of the durable queue's `cortex:tasks:…`.
            ("CACHE_NAMESPACE", "cortex:"),
            ("CACHE_NAMESPACE", "cortex:tasks:q:"),
            // Would also clear `app2:…`.
            ("CACHE_NAMESPACE", "app"),
            // A hash tag the keys would have to close.
            ("CACHE_NAMESPACE", "app:{users:"),
            ("CACHE_DEFAULT_TTL", "soon"),
            ("CACHE_DEFAULT_TTL", "0"),
            ("CACHE_DEGRADE_ON_ERROR", "maybe"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v:?}: {err}");
            assert!(
                err.to_string().contains(&format!("{v:?}")),
                "{k}={v:?}: {err}"
            );
        }
    }

    #[test]
    fn the_default_namespace_is_the_reserved_one() {
        let c = RedisCacheConfig::default();
        assert_eq!(c.namespace, "cortex:cache:");
        c.validate().unwrap();
        for ns in ["cortex:cache:users:", "sessions:", "app2:", "app:{users}:"] {
            check_namespace(ns).unwrap();
        }
        let empty = RedisCacheConfig {
            namespace: String::new(),
            ..c
        };
        assert!(matches!(
            empty.validate(),
            Err(Error::InvalidConfig {
                key: "CACHE_NAMESPACE",
                ..
            })
        ));
    }

    #[test]
    fn serde_round_trip() {
        let c = RedisCacheConfig::default();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<RedisCacheConfig>(&json).unwrap(), c);
    }
}
