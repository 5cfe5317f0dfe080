//! Settings and counters of an object [`Pool`](super::Pool).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest `max_size` accepted: the slots are allocated up front.
pub(super) const MAX_SIZE_LIMIT: usize = 1 << 16;

/// Settings of a [`Pool`](super::Pool): build one with [`Pool::builder`](super::Pool::builder) or pass this to
/// [`PoolBuilder::config`](super::PoolBuilder::config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectPoolConfig {
    /// The most objects the pool creates (idle plus in use); they are created lazily.
    ///
    /// Default: twice the available parallelism, at least 4: enough for every
    /// worker thread to hold one object while another holder awaits I/O.
    pub max_size: usize,
    /// How long [`Pool::acquire`](super::Pool::acquire) may take in total (waiting for a slot, recycling,
    /// creating) before it fails with [`Error::Timeout`](crate::Error::Timeout). In seconds in config files.
    ///
    /// Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub acquire_timeout: Duration,
    /// Warn (with the caller's source location) when an object is held longer than
    /// this. In seconds in config files.
    ///
    /// Default: `None` (no check).
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub leak_threshold: Option<Duration>,
    /// Run [`Manager::recycle`](super::Manager::recycle) before handing out an idle object.
    ///
    /// Default: `true`.
    pub recycle: bool,
}

impl Default for ObjectPoolConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_size: (cores * 2).max(4),
            acquire_timeout: Duration::from_secs(30),
            leak_threshold: None,
            recycle: true,
        }
    }
}

/// Counters of a [`Pool`](super::Pool) since it was built, plus its current usage: a plain,
/// serde-able snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPoolStats {
    /// The most objects the pool creates.
    pub max_size: usize,
    /// Objects that exist now (idle, in use, or being created or recycled).
    pub size: usize,
    /// Idle objects now.
    pub idle: usize,
    /// Objects held by callers now.
    pub in_use: usize,
    /// Callers waiting now.
    pub waiting: usize,
    /// Objects created.
    pub created: u64,
    /// Gets served by an existing object.
    pub reused: u64,
    /// Objects dropped because [`Manager::recycle`](super::Manager::recycle) failed.
    pub recycle_failed: u64,
    /// Objects dropped because [`Manager::is_valid`](super::Manager::is_valid) said `false`.
    pub invalid: u64,
    /// Objects taken out with [`Object::detach`](super::Object::detach).
    pub detached: u64,
    /// Objects dropped for any reason (recycle failure, invalid, detached, closed).
    pub closed: u64,
    /// The most objects held by callers at once.
    pub max_used: usize,
    /// Gets that failed with [`Error::Timeout`](crate::Error::Timeout).
    pub timeouts: u64,
}
