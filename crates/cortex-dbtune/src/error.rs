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
    /// EXPLAIN output that does not have the expected JSON shape.
    #[error("invalid EXPLAIN JSON: {0}")]
    PlanJson(#[from] serde_json::Error),
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
    /// A database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// No connection to the server could be had (bounded; the URL's password is never
    /// shown).
    #[error(transparent)]
    Pool(#[from] cortex_pool::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
