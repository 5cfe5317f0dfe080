/// Everything that can go wrong in cortex-cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader of a cached call failed; every caller waiting on that load gets
    /// the same error.
    #[error("the loader failed")]
    Loader(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// A cached call's load did not finish within the load timeout: the loader hung, or
    /// the caller gave up waiting on another caller's load.
    #[error("load of {key:?} did not finish within {timeout:?}")]
    LoadTimeout {
        /// The cache key loaded.
        key: String,
        /// The timeout that ran out.
        timeout: std::time::Duration,
    },
    /// The store failed moments ago and is not asked again until `retry_in` has passed,
    /// so an outage costs callers nothing instead of a connect timeout each.
    #[error("the store is cooling down after a fault; next try in {retry_in:?}")]
    Unavailable {
        /// Time until the store is tried again.
        retry_in: std::time::Duration,
    },
    /// A wait had a bound and reached it, e.g. for a
    /// [`TwoTierCache`](crate::TwoTierCache)'s invalidation listener to subscribe.
    #[error("{what} did not happen within {waited:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        waited: std::time::Duration,
    },
    /// A configuration value was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable, e.g. `CACHE_NAMESPACE`.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A Redis command failed. Reads return it only with `degrade_on_error` off;
    /// writes, deletes, `clear` and `increment` always do.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    /// No pooled connection could be had (timeout, unreachable server).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("no pooled redis connection")]
    Pool(#[from] cortex_pool::Error),
    /// A Redis Cluster cannot serve its whole keyspace now: a master that serves slots
    /// is down, so a namespace-wide `clear` cannot reach every key. Retryable: once its
    /// replica has taken over (seconds), the call succeeds.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("a Redis Cluster master is down (failover under way)")]
    Cluster {
        /// What the pool reported.
        #[source]
        source: cortex_pool::Error,
    },
    /// A value did not serialize to, or deserialize from, JSON.
    #[error("JSON (de)serialization failed for key {key:?}")]
    Serde {
        /// The cache key (or key prefix) concerned.
        key: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// Compressing or decompressing a value failed (a corrupt stored value).
    #[error("a stored value did not decompress")]
    Compression(#[source] std::io::Error),
    /// `increment` met a value that is not a 64-bit integer, or would overflow it.
    #[error("value at {key:?} is not an integer or the increment overflows")]
    NotAnInteger {
        /// The key concerned.
        key: String,
    },
}

impl From<cortex_support::ConfigError> for Error {
    fn from(e: cortex_support::ConfigError) -> Self {
        Error::InvalidConfig {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

impl Error {
    /// `true` when trying the same call again later can succeed: a timeout, a store
    /// cooling down after a fault, a lost or refused connection, an exhausted pool.
    /// `false` for bad configuration, bad values and answered errors. A loader's
    /// failure is `false` too: whether it is worth retrying is for its source to say
    /// (reach it through [`std::error::Error::source`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::LoadTimeout { .. } | Error::Unavailable { .. } | Error::Timeout { .. } => true,
            #[cfg(feature = "redis")]
            Error::Redis(e) => crate::redis_cache::is_transient(e),
            #[cfg(feature = "redis")]
            Error::Pool(e) => {
                e.is_retryable()
                    || matches!(e, cortex_pool::Error::Redis(r) if crate::redis_cache::is_transient(r))
            }
            #[cfg(feature = "redis")]
            Error::Cluster { .. } => true,
            _ => false,
        }
    }

    /// `true` for faults of the store (connection, timeout, I/O) as opposed to misuse
    /// (bad config, bad value): the kind `degrade_on_error` turns into misses.
    pub fn is_backend(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } => true,
            #[cfg(feature = "redis")]
            Error::Redis(_) | Error::Pool(_) | Error::Cluster { .. } => true,
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_faults_that_can_pass_are_retryable() {
        let retryable = [
            Error::Unavailable {
                retry_in: Duration::from_millis(5),
            },
            Error::LoadTimeout {
                key: "k".into(),
                timeout: Duration::from_secs(1),
            },
            Error::Timeout {
                what: "subscription",
                waited: Duration::from_secs(1),
            },
        ];
        for e in &retryable {
            assert!(e.is_retryable(), "{e}");
        }
        let final_ = [
            Error::from(cortex_support::ConfigError::new(
                "CACHE_NAMESPACE",
                "x",
                "bad",
            )),
            Error::NotAnInteger { key: "k".into() },
            Error::Loader(std::sync::Arc::new(std::io::Error::other("down"))),
        ];
        for e in &final_ {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_errors_are_retryable_when_the_connection_failed() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let lost = Error::Redis(redis::RedisError::from(refused));
        assert!(lost.is_retryable() && lost.is_backend());
        let answered = Error::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "wrong type",
        )));
        assert!(!answered.is_retryable());
        // The source is kept and its text stays out of Display.
        assert_eq!(lost.to_string(), "redis call failed");
        assert!(std::error::Error::source(&lost).is_some());
        // What a cluster says during a failover: worth retrying.
        let down = Error::Redis(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
            "TRYAGAIN",
        )));
        assert!(down.is_retryable());
        let cluster = Error::Cluster {
            source: cortex_pool::Error::Backend {
                source: "master 127.0.0.1:7000 is down".into(),
            },
        };
        assert!(cluster.is_retryable() && cluster.is_backend());
        assert!(!cluster.to_string().contains("7000"));
    }
}
