//! The crate's error type.

/// Everything that can go wrong in cortex-dbtune. Each variant names the offending value,
/// so a user can fix the input without reading the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A memory size that does not parse (e.g. `"16 GiB"`, `"lots"`).
    #[error(
        "invalid memory size {value:?}: expected an integer followed by kB, MB, GB or TB (e.g. \"16GB\")"
    )]
    InvalidMemory {
        /// The text given.
        value: String,
    },
    /// Less memory than the smallest amount pgtune accepts.
    #[error("total memory {bytes} bytes is below the minimum of {min_bytes} bytes (1MB)")]
    MemoryTooSmall {
        /// The memory given, in bytes.
        bytes: u64,
        /// The minimum, in bytes.
        min_bytes: u64,
    },
    /// Memory that is not a whole number of kB (pgtune computes in kB).
    #[error("total memory {bytes} bytes is not a whole number of kB")]
    MemoryNotWholeKb {
        /// The memory given, in bytes.
        bytes: u64,
    },
    /// A CPU count of zero.
    #[error("invalid CPU count {cpus}: must be at least 1")]
    InvalidCpus {
        /// The count given.
        cpus: u32,
    },
    /// A connection count of zero.
    #[error("invalid max connections {connections}: must be at least 1")]
    InvalidConnections {
        /// The count given.
        connections: u32,
    },
    /// A PostgreSQL major version pgtune does not support.
    #[error("unsupported PostgreSQL version {version}: supported are {min}..={max}")]
    UnsupportedVersion {
        /// The version given.
        version: u32,
        /// The lowest supported major version.
        min: u32,
        /// The highest supported major version.
        max: u32,
    },
    /// A name that does not match any variant (db type, storage, ...).
    #[error("invalid {what} {value:?}: expected one of {expected}")]
    InvalidChoice {
        /// What was being parsed.
        what: &'static str,
        /// The text given.
        value: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// EXPLAIN output that does not have the expected JSON shape (the parser's error
    /// is the source).
    #[error("invalid EXPLAIN JSON")]
    PlanJson(#[from] serde_json::Error),
    /// A report could not be written as JSON.
    #[error("cannot write the report as JSON")]
    Serialize(#[source] serde_json::Error),
    /// EXPLAIN output that parsed as JSON but holds no plan.
    #[error("EXPLAIN output holds no plan")]
    EmptyPlan,
    /// An invalid option (e.g. a statement timeout of zero).
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// `pg_stat_statements` texts of other users were to be planned, and no
    /// low-privilege role is set to plan them as. Planning runs a statement's IMMUTABLE
    /// and STABLE functions, with the privileges of whoever plans it.
    #[error(
        "will not plan the pg_stat_statements texts of {users:?} with the advisor's own \
         privileges (planning runs their functions): set a low-privilege plan role \
         (DBTUNE_PLAN_ROLE, AdviseOptions::plan_role), or leave them out of \
         DBTUNE_PLAN_USERS (AdviseOptions::plan_users)"
    )]
    PlanRoleRequired {
        /// The users whose statements would have been planned.
        users: Vec<String>,
    },
    /// A setting (an environment variable) that is set but cannot be used.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The variable, e.g. `DBTUNE_PLAN_ROLE`.
        key: &'static str,
        /// The value as given (no setting of this crate is a secret).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A database call failed (the driver's error is the source).
    #[error("database call failed")]
    Database(#[from] sqlx::Error),
    /// The connection pool failed (its error is the source).
    #[error("connection pool failed")]
    Pool(#[from] cortex_pool::Error),
    /// No connection to the server could be had within the pool's bounded wait.
    #[error("cannot connect to PostgreSQL at {url}")]
    Connect {
        /// The URL with its password hidden ([`cortex_support::redact::redact_url`]).
        url: String,
        /// Why.
        #[source]
        source: cortex_pool::Error,
    },
    /// The async runtime of the command line could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// `true` when the same call may succeed later: a lost or refused connection, a
    /// pool timeout, a statement cancelled by its timeout, a serialization failure or
    /// deadlock, a server short of resources or shutting down. `false` for bad input,
    /// options and configuration, and for SQL errors that will repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(e) => sqlx_retryable(e),
            Error::Pool(e) | Error::Connect { source: e, .. } => pool_retryable(e),
            _ => false,
        }
    }
}

/// Whether a cortex-pool error is worth retrying: its own verdict, or the driver's.
fn pool_retryable(e: &cortex_pool::Error) -> bool {
    match e {
        cortex_pool::Error::Database(e) => sqlx_retryable(e),
        other => other.is_retryable(),
    }
}

/// Whether a driver error is worth retrying, by its kind or SQLSTATE class.
fn sqlx_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| retryable_sqlstate(&c)),
        _ => false,
    }
}

/// SQLSTATEs of failures that may pass on a retry: connection exceptions (08),
/// serialization failure and deadlock (40001, 40P01), insufficient resources (53),
/// query cancelled, e.g. by `statement_timeout` (57014), and the server shutting down
/// or starting (57P01..57P03).
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03"
        )
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

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn retryable_only_where_a_later_try_can_succeed() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(Error::Database(sqlx::Error::Io(io())).is_retryable());
        assert!(Error::Database(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(
            Error::Pool(cortex_pool::Error::Database(sqlx::Error::PoolTimedOut)).is_retryable()
        );
        let connect = Error::Connect {
            url: "postgres://u:***@h/db".into(),
            source: cortex_pool::Error::Database(sqlx::Error::Io(io())),
        };
        assert!(connect.is_retryable());
        assert!(!Error::Database(sqlx::Error::RowNotFound).is_retryable());
        assert!(!Error::EmptyPlan.is_retryable());
        assert!(!Error::InvalidCpus { cpus: 0 }.is_retryable());
        assert!(!Error::from(cortex_support::ConfigError::new("K", "v", "bad")).is_retryable());
        for code in ["08006", "40001", "40P01", "53300", "57014", "57P01"] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        for code in ["42601", "42P01", "23505", "22P02"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn display_leaves_the_source_to_source() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let text = json.to_string();
        let e = Error::PlanJson(json);
        assert_eq!(e.to_string(), "invalid EXPLAIN JSON");
        assert_eq!(e.source().map(ToString::to_string), Some(text));
        let connect = Error::Connect {
            url: "postgres://u:***@h/db".into(),
            source: cortex_pool::Error::Closed,
        };
        assert_eq!(
            connect.to_string(),
            "cannot connect to PostgreSQL at postgres://u:***@h/db"
        );
        assert!(connect.source().is_some());
        let config = Error::from(cortex_support::ConfigError::new(
            "DBTUNE_PLAN_USERS",
            "a b",
            "not a role",
        ));
        assert!(matches!(
            config,
            Error::InvalidConfig {
                key: "DBTUNE_PLAN_USERS",
                ..
            }
        ));
        assert!(config.to_string().contains("\"a b\""), "{config}");
    }
}
