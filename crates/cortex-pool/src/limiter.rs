use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cortex_support::env::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::status::Waiting;
use crate::{Error, PoolMetrics, PoolStatus, Result};

/// Settings of an admission [`Limiter`].
///
/// | field | variable | default |
/// |---|---|---|
/// | `limit` | `DB_CONNECTION_LIMIT` | 50 |
/// | `max_wait` | `DB_CONNECTION_WAIT`, s | 5 |
/// | `retry_after` | `DB_CONNECTION_RETRY_AFTER`, s | 1 |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimiterConfig {
    /// Most holders at once. Default: 50.
    pub limit: usize,
    /// Longest wait for a slot before [`Error::Saturated`]. Default: 5 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub max_wait: Duration,
    /// What to tell a rejected client to wait (`Retry-After`). Default: 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub retry_after: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            limit: 50,
            max_wait: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl LimiterConfig {
    /// Defaults overridden by the process environment ([`LimiterConfig::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or the
    /// limit is zero.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }
}

impl LimiterConfig {
    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `DB_CONNECTION_LIMIT` when the limit is 0 or
    /// above what a semaphore holds.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidConfig {
                key: "DB_CONNECTION_LIMIT",
                value: self.limit.to_string(),
                reason: format!("must be between 1 and {}", Semaphore::MAX_PERMITS),
            });
        }
        Ok(())
    }
}

impl FromEnv for LimiterConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "DB_CONNECTION_LIMIT",
            default: "50",
            doc: "Most holders of the admission limiter at once.",
        },
        EnvVar {
            name: "DB_CONNECTION_WAIT",
            default: "5s",
            doc: "Longest wait for an admission before `Error::Saturated` (`Limiter::acquire_within` shortens it to a caller's own budget).",
        },
        EnvVar {
            name: "DB_CONNECTION_RETRY_AFTER",
            default: "1s",
            doc: "`Retry-After` told to a rejected client.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("DB_CONNECTION_LIMIT")? {
            c.limit = v;
        }
        if let Some(v) = env.duration("DB_CONNECTION_WAIT")? {
            c.max_wait = v;
        }
        if let Some(v) = env.duration("DB_CONNECTION_RETRY_AFTER")? {
            c.retry_after = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Counters of a [`Limiter`] since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimiterStats {
    /// Slots held now.
    pub active: usize,
    /// Callers waiting now.
    pub waiting: usize,
    /// Most slots held at once.
    pub peak_active: usize,
    /// Callers admitted.
    pub admitted: u64,
    /// Callers turned away with [`Error::Saturated`].
    pub rejected: u64,
}

/// An admission limiter: at most `limit` holders, a bounded wait, then a typed
/// [`Error::Saturated`] that a service answers with 503 and `Retry-After`.
///
/// ```
/// use std::time::Duration;
/// use cortex_pool::{Error, Limiter, LimiterConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::new(LimiterConfig { limit: 1, max_wait: Duration::from_millis(10), ..Default::default() })?;
/// let held = limiter.acquire().await?;
/// assert!(matches!(limiter.acquire().await, Err(Error::Saturated { limit: 1, .. })));
/// drop(held);
/// assert!(limiter.acquire().await.is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LimiterConfig,
    semaphore: Arc<Semaphore>,
    metrics: PoolMetrics,
    waiting: AtomicUsize,
    peak: AtomicUsize,
    admitted: AtomicU64,
    rejected: AtomicU64,
}

impl Limiter {
    /// A limiter with `config`, recording into the global registry as pool `limiter`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the limit is zero.
    pub fn new(config: LimiterConfig) -> Result<Self> {
        Self::with_metrics(
            config,
            PoolMetrics::new(cortex_metrics::global(), "limiter"),
        )
    }

    /// As [`new`](Self::new), recording into `metrics`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_metrics(config: LimiterConfig, metrics: PoolMetrics) -> Result<Self> {
        config.validate()?;
        let inner = Arc::new(Inner {
            semaphore: Arc::new(Semaphore::new(config.limit)),
            config,
            metrics,
            waiting: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        inner.metrics.register_levels(&inner, Inner::status);
        Ok(Self { inner })
    }

    /// A slot, waiting at most `max_wait`; released when the [`Admission`] drops.
    ///
    /// # Errors
    /// [`Error::Saturated`] when no slot freed up in time.
    pub async fn acquire(&self) -> Result<Admission> {
        crate::span::acquire("limiter", self.admit(self.inner.config.max_wait)).await
    }

    /// A slot, waiting at most the shorter of `max_wait` and `budget`: for a caller
    /// whose own deadline (a request timeout) is nearer than the limiter's wait, so
    /// the wait for a slot never spends time the caller no longer has.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cortex_pool::{Error, Limiter, LimiterConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = Limiter::new(LimiterConfig { limit: 1, max_wait: Duration::from_secs(60), ..Default::default() })?;
    /// let held = limiter.acquire().await?;
    /// let refused = limiter.acquire_within(Duration::from_millis(10)).await;
    /// assert!(matches!(refused, Err(Error::Saturated { waited, .. }) if waited < Duration::from_secs(60)));
    /// # drop(held);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Saturated`] when no slot freed up in time.
    pub async fn acquire_within(&self, budget: Duration) -> Result<Admission> {
        let wait = self.inner.config.max_wait.min(budget);
        crate::span::acquire("limiter", self.admit(wait)).await
    }

    async fn admit(&self, max_wait: Duration) -> Result<Admission> {
        let inner = &self.inner;
        let start = Instant::now();
        let permit = match inner.semaphore.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => {
                let waiting = Waiting::enter(&inner.waiting);
                let r =
                    tokio::time::timeout(max_wait, inner.semaphore.clone().acquire_owned()).await;
                drop(waiting);
                match r {
                    Ok(Ok(p)) => Ok(p),
                    // The semaphore is never closed; a timeout is the only way to fail.
                    _ => Err(start.elapsed()),
                }
            }
        };
        let waited = start.elapsed();
        inner.metrics.acquire_wait(waited);
        match permit {
            Ok(permit) => {
                inner.admitted.fetch_add(1, Relaxed);
                inner.peak.fetch_max(self.active(), Relaxed);
                Ok(Admission {
                    _permit: permit,
                    acquired: Instant::now(),
                    metrics: inner.metrics.clone(),
                })
            }
            Err(waited) => {
                inner.rejected.fetch_add(1, Relaxed);
                inner.metrics.timeout();
                Err(Error::Saturated {
                    limit: inner.config.limit,
                    waited,
                })
            }
        }
    }

    /// Slots held now.
    pub fn active(&self) -> usize {
        self.inner.active()
    }

    /// What to tell a rejected client to wait.
    pub fn retry_after(&self) -> Duration {
        self.inner.config.retry_after
    }

    /// Counters since the limiter was made.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            active: self.active(),
            waiting: self.inner.waiting.load(Relaxed),
            peak_active: self.inner.peak.load(Relaxed),
            admitted: self.inner.admitted.load(Relaxed),
            rejected: self.inner.rejected.load(Relaxed),
        }
    }
}

impl Inner {
    fn active(&self) -> usize {
        self.config
            .limit
            .saturating_sub(self.semaphore.available_permits())
    }

    /// The levels the gauges export. A limiter lends slots, not objects: nothing is
    /// idle, so `size` and `in_use` are both the slots held, and `max` is the limit.
    fn status(&self) -> PoolStatus {
        let active = self.active();
        PoolStatus {
            size: active,
            idle: 0,
            in_use: active,
            max: self.config.limit,
            waiting: self.waiting.load(Relaxed),
        }
    }
}

/// A held slot of a [`Limiter`]; released on drop, recording the hold time.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    acquired: Instant,
    metrics: PoolMetrics,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics.hold(self.acquired.elapsed());
    }
}
