use std::time::Duration;

/// A boxed error from a backend (a `Manager`, sqlx, redis).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in cortex-pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object or connection became free within the acquire timeout.
    #[error("no connection became free within {waited:?} (pool of {max})")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's maximum size.
        max: usize,
    },
    /// A command did not finish within the client-side command timeout.
    #[error("command did not finish within {waited:?}")]
    CommandTimeout {
        /// The bound that ran out.
        waited: Duration,
    },
    /// The admission limiter had no free slot within its wait: answer 503 with
    /// `Retry-After`.
    #[error("connection limit reached: {limit} in use, waited {waited:?}")]
    Saturated {
        /// The concurrency limit.
        limit: usize,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,
    /// A configuration value was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable, e.g. `DB_WORK_MEM`.
        key: &'static str,
        /// The value as given, with any password redacted.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Creating, checking or recycling an object failed in its backend.
    #[error("backend error: {source}")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A PostgreSQL or SQLite error.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A Redis error.
    #[cfg(feature = "redis")]
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
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
    /// `true` for errors a caller may retry later (timeouts, saturation).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Saturated { .. } | Error::CommandTimeout { .. }
        )
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
