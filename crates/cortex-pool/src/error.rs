use std::time::Duration;

/// A boxed error from a backend (a `Manager`, sqlx, redis).
pub use cortex_support::BoxError;

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
    /// A master of the Redis Cluster that serves slots is down: a failover is under
    /// way, and the call can succeed once a replica has taken over.
    #[error("Redis Cluster master {address} ({slots} slots) is down: a failover is under way")]
    MasterDown {
        /// The master's `host:port`.
        address: String,
        /// How many hash slots it served.
        slots: u32,
    },
    /// Creating, checking or recycling an object failed in its backend.
    #[error("backend error")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A PostgreSQL or SQLite error.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[error("database call failed")]
    Database(#[from] sqlx::Error),
    /// A Redis error.
    #[cfg(feature = "redis")]
    #[error("redis call failed")]
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
    /// `true` when the same call may succeed if tried again later: an acquire or
    /// command timeout, a saturated limiter, a lost or refused connection, a database
    /// deadlock or serialization failure, a Redis server that is loading or busy.
    /// `false` for bad config or input, a closed pool, a certificate the client does
    /// not trust, and errors the pool cannot judge (a `Manager`'s own error).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. }
            | Error::Saturated { .. }
            | Error::CommandTimeout { .. }
            | Error::MasterDown { .. } => true,
            Error::Closed | Error::InvalidConfig { .. } | Error::Backend { .. } => false,
            #[cfg(any(feature = "postgres", feature = "sqlite"))]
            Error::Database(e) => sqlx_retryable(e),
            #[cfg(feature = "redis")]
            Error::Redis(e) => redis_retryable(e),
        }
    }
}

/// I/O errors that say the connection was lost or never made, not that what came
/// over it was wrong (a failed TLS handshake is `InvalidData`: not retryable).
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
fn io_retryable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | Interrupted
    )
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn sqlx_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Io(io) => io_retryable(io),
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: serialization failure, deadlock, too many connections,
            // admin/crash shutdown, cannot connect now, connection exceptions (08xxx).
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6).
            matches!(
                code.as_ref(),
                "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" | "5" | "6"
            ) || code.starts_with("08")
        }),
        _ => false,
    }
}

#[cfg(feature = "redis")]
fn redis_retryable(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    if e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        return io_retryable(io);
    }
    // Server replies such as LOADING, BUSY, TRYAGAIN, MASTERDOWN.
    matches!(e.kind(), redis::ErrorKind::Server(_))
        && matches!(
            e.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
        )
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let t = Duration::from_secs(1);
        assert!(Error::Timeout { waited: t, max: 1 }.is_retryable());
        let down = Error::MasterDown {
            address: "127.0.0.1:7000".into(),
            slots: 5461,
        };
        assert!(down.is_retryable());
        assert!(down.to_string().contains("127.0.0.1:7000"), "{down}");
        assert!(
            Error::Saturated {
                limit: 1,
                waited: t
            }
            .is_retryable()
        );
        assert!(Error::CommandTimeout { waited: t }.is_retryable());
        assert!(!Error::Closed.is_retryable());
        assert!(!Error::from(cortex_support::ConfigError::new("K", "v", "bad")).is_retryable());
        let backend = Error::Backend {
            source: "boom".into(),
        };
        assert!(!backend.is_retryable());
        // Display does not repeat the source; the source is reachable.
        assert_eq!(backend.to_string(), "backend error");
        assert!(std::error::Error::source(&backend).is_some());
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        {
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            let bad_cert = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
            assert!(Error::Database(sqlx::Error::Io(reset)).is_retryable());
            assert!(Error::Database(sqlx::Error::PoolTimedOut).is_retryable());
            assert!(!Error::Database(sqlx::Error::RowNotFound).is_retryable());
            let e = Error::Database(sqlx::Error::Io(bad_cert));
            assert!(!e.is_retryable());
            assert_eq!(e.to_string(), "database call failed");
        }
        #[cfg(feature = "redis")]
        {
            let refused = redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ));
            assert!(Error::Redis(refused).is_retryable());
            let wrong_type = redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "x"));
            let e = Error::Redis(wrong_type);
            assert!(!e.is_retryable());
            assert_eq!(e.to_string(), "redis call failed");
        }
    }
}
