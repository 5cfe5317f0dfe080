//! The generic async object pool: [`Manager`], [`Pool`], [`Object`].
//!
//! Capacity is `max_size` *slots* (see `slots.rs`): idle (holding an object), empty
//! (free to create one in) or held by a caller. Taking and returning a slot is one
//! atomic read-modify-write on a bitmap word; the waiter list (a mutex) is touched
//! only when a caller has to wait, and a returned slot is then handed straight to
//! the oldest waiter, so waiters are served in order and a wake-up is never lost.
//!
//! Layout: `manager` (the trait), `config` (settings and counters), `guard` (the
//! borrowed [`Object`]), and the internals: `shared` (state shared with guards, how a
//! slot is returned), `waiter` (the queue and its sweeper), `deadline` (the lazily
//! started time budget of one acquire).

mod config;
mod deadline;
mod guard;
mod manager;
mod shared;
mod waiter;

pub use self::config::{ObjectPoolConfig, ObjectPoolStats};
pub use self::guard::Object;
pub use self::manager::Manager;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use self::config::MAX_SIZE_LIMIT;
use self::deadline::{Deadline, bounded};
use self::shared::{Counters, Outcome, Shared, Slot, WaitList};
use self::waiter::Waiter;
use crate::slots::{Slots, Taken};
use crate::{BoxError, Error, PoolMetrics, Result};

/// A generic async object pool. Cheap to clone: clones share the pool.
///
/// ```
/// use cortex_pool::{Manager, Pool};
///
/// struct Buffers;
///
/// impl Manager for Buffers {
///     type Object = Vec<u8>;
///     type Error = std::io::Error;
///
///     async fn create(&self) -> Result<Vec<u8>, std::io::Error> {
///         Ok(Vec::with_capacity(4096))
///     }
///
///     async fn recycle(&self, buf: &mut Vec<u8>) -> Result<(), std::io::Error> {
///         buf.clear();
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::builder(Buffers).max_size(8).build()?;
/// {
///     let mut buf = pool.acquire().await?;
///     buf.extend_from_slice(b"hello");
/// } // dropping the guard returns the buffer
/// let buf = pool.acquire().await?;
/// assert!(buf.is_empty());
/// assert_eq!(pool.stats().created, 1);
/// # Ok(())
/// # }
/// ```
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pool`]; start with [`Pool::builder`].
#[must_use]
pub struct PoolBuilder<M: Manager> {
    manager: M,
    config: ObjectPoolConfig,
    metrics: Option<PoolMetrics>,
}

impl<M: Manager> fmt::Debug for PoolBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl<M: Manager> PoolBuilder<M> {
    /// Replace every setting with `config`.
    pub fn config(mut self, config: ObjectPoolConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`ObjectPoolConfig::max_size`].
    pub fn max_size(mut self, n: usize) -> Self {
        self.config.max_size = n;
        self
    }

    /// See [`ObjectPoolConfig::acquire_timeout`].
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.config.acquire_timeout = d;
        self
    }

    /// See [`ObjectPoolConfig::recycle`].
    pub fn recycle(mut self, on: bool) -> Self {
        self.config.recycle = on;
        self
    }

    /// See [`ObjectPoolConfig::leak_threshold`].
    pub fn leak_threshold(mut self, d: Option<Duration>) -> Self {
        self.config.leak_threshold = d;
        self
    }

    /// Record acquire wait, hold time, timeouts, objects created and closed.
    /// Without this call the pool reads no clock on its fast path. Default: off.
    pub fn metrics(mut self, metrics: PoolMetrics) -> Self {
        // A disabled recorder costs clock reads for nothing: treat it as none.
        self.metrics = Some(metrics).filter(PoolMetrics::is_enabled);
        self
    }

    /// Validate the settings and build the pool. No object is created yet.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `max_size` when it is 0 or above 2^16.
    pub fn build(self) -> Result<Pool<M>> {
        let max = self.config.max_size;
        if max == 0 || max > MAX_SIZE_LIMIT {
            return Err(Error::InvalidConfig {
                key: "max_size",
                value: max.to_string(),
                reason: format!("must be between 1 and {MAX_SIZE_LIMIT}"),
            });
        }
        let shared = Arc::new(Shared {
            slots: Slots::new(max),
            in_use: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            waiters: Mutex::new(WaitList {
                queue: VecDeque::new(),
                closed: false,
                sweeping: false,
                sweep_at: None,
            }),
            sweeper: Arc::new(tokio::sync::Notify::new()),
            manager: self.manager,
            config: self.config,
            metrics: self.metrics,
            stats: Counters::default(),
        });
        if let Some(m) = &shared.metrics {
            m.register_levels(&shared, Shared::status);
        }
        Ok(Pool { shared })
    }
}

impl<M: Manager> Pool<M> {
    /// Start building a pool of objects made by `manager`.
    pub fn builder(manager: M) -> PoolBuilder<M> {
        PoolBuilder {
            manager,
            config: ObjectPoolConfig::default(),
            metrics: None,
        }
    }

    /// Take an object, waiting up to the pool's `acquire_timeout`.
    ///
    /// An idle object is checked with [`Manager::is_valid`] and, if recycling is on,
    /// reset with [`Manager::recycle`]; one that fails is dropped and replaced. With
    /// no idle object and a vacant slot, a new object is created.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the whole get took longer than the timeout,
    /// [`Error::Closed`] after [`close`](Self::close), [`Error::Backend`] when
    /// creating an object failed (the slot is freed).
    ///
    /// # Panics
    /// When it has to wait outside a Tokio runtime with the time driver enabled.
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        crate::span::acquire(
            "object",
            self.acquire_inner(self.shared.config.acquire_timeout, true, caller),
        )
    }

    /// [`acquire`](Self::acquire) with its own timeout.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Panics
    /// As [`acquire`](Self::acquire).
    #[track_caller]
    pub fn acquire_within(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        crate::span::acquire("object", self.acquire_inner(timeout, true, caller))
    }

    /// Take an object without waiting for one to be returned. Recycling or creating
    /// an object is still awaited (bounded by the acquire timeout).
    ///
    /// # Errors
    /// [`Error::Timeout`] with `waited` zero when every slot is in use; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Panics
    /// As [`acquire`](Self::acquire).
    #[track_caller]
    pub fn try_acquire(&self) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        crate::span::acquire(
            "object",
            self.acquire_inner(self.shared.config.acquire_timeout, false, caller),
        )
    }

    /// Counters since the pool was built, plus current usage.
    pub fn stats(&self) -> ObjectPoolStats {
        let s = &*self.shared;
        let c = &s.stats;
        let status = s.status();
        ObjectPoolStats {
            max_size: status.max,
            size: status.size,
            idle: status.idle,
            in_use: status.in_use,
            waiting: status.waiting,
            created: c.created.load(Relaxed),
            reused: c.reused.total(),
            recycle_failed: c.recycle_failed.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            detached: c.detached.load(Relaxed),
            closed: c.closed.load(Relaxed),
            max_used: c.max_used.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
        }
    }

    /// Close the pool: waiters get [`Error::Closed`] now, later gets fail with it,
    /// idle objects are dropped now and objects in use when they are returned.
    pub fn close(&self) {
        let s = &*self.shared;
        s.closed.store(true, SeqCst);
        let nodes = {
            let mut list = s.lock_waiters();
            list.closed = true;
            s.waiting.store(0, SeqCst);
            std::mem::take(&mut list.queue)
        };
        for node in nodes {
            if let Some(waker) = node.finish(Outcome::Closed) {
                waker.wake();
            }
        }
        s.drain_idle();
    }

    /// `true` after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Relaxed)
    }

    /// The pool's manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    async fn acquire_inner(
        &self,
        timeout: Duration,
        wait: bool,
        caller: &'static Location<'static>,
    ) -> Result<Object<M>> {
        let s = &*self.shared;
        // Started when the get first has to wait: the fast path reads no clock and
        // arms no timer. A get that never waits records an acquire wait of zero; the
        // synchronous work it skips timing takes well under a microsecond.
        let mut clock = Deadline {
            start: None,
            deadline: None,
            timeout,
        };
        if s.closed.load(Relaxed) {
            return Err(Error::Closed);
        }
        let taken = match s.slots.take() {
            Some(t) => t,
            None if !wait => {
                return Err(Error::Timeout {
                    waited: Duration::ZERO,
                    max: s.config.max_size,
                });
            }
            None => {
                // No timer per waiter: the pool's sweeper times out expired waiters, so
                // a wait costs a queue entry, not a timer-wheel registration.
                let deadline = clock.deadline();
                match Waiter::new(&self.shared, deadline).await {
                    Ok(t) => t,
                    Err(Error::Timeout { .. }) => return Err(s.timed_out(&clock)),
                    Err(e) => return Err(e),
                }
            }
        };
        let mut slot = Slot {
            shared: s,
            index: match taken {
                Taken::Object(i, _) | Taken::Empty(i) => i,
            },
            counted: false,
        };
        if let Taken::Object(_, mut obj) = taken {
            slot.counted = true;
            if !s.manager.is_valid(&obj) {
                s.stats.invalid.fetch_add(1, Relaxed);
                drop(obj);
                slot.object_dropped();
            } else if !s.config.recycle {
                s.stats.reused.increment();
                return Ok(self.hand_out(obj, slot, &clock, caller));
            } else {
                match bounded(s.manager.recycle(&mut obj), &mut clock).await {
                    Some(Ok(())) => {
                        s.stats.reused.increment();
                        return Ok(self.hand_out(obj, slot, &clock, caller));
                    }
                    Some(Err(e)) => {
                        s.stats.recycle_failed.fetch_add(1, Relaxed);
                        let e: BoxError = e.into();
                        tracing::debug!(error = %e, "recycle failed; replacing the object");
                        drop(obj);
                        slot.object_dropped();
                    }
                    None => return Err(s.timed_out(&clock)),
                }
            }
        }
        // An empty slot (or one just emptied): create an object for it.
        s.size.fetch_add(1, Relaxed);
        slot.counted = true;
        match bounded(s.manager.create(), &mut clock).await {
            Some(Ok(obj)) => {
                s.stats.created.fetch_add(1, Relaxed);
                if let Some(m) = &s.metrics {
                    m.created();
                }
                Ok(self.hand_out(obj, slot, &clock, caller))
            }
            // Dropping `slot` frees it.
            Some(Err(e)) => Err(Error::Backend { source: e.into() }),
            None => Err(s.timed_out(&clock)),
        }
    }

    fn hand_out(
        &self,
        obj: M::Object,
        slot: Slot<'_, M>,
        clock: &Deadline,
        caller: &'static Location<'static>,
    ) -> Object<M> {
        let s = &*self.shared;
        let index = slot.index;
        std::mem::forget(slot);
        let in_use = s.in_use.fetch_add(1, Relaxed) + 1;
        if in_use > s.stats.max_used.load(Relaxed) {
            s.stats.max_used.fetch_max(in_use, Relaxed);
        }
        let acquired_at = if s.metrics.is_some() || s.config.leak_threshold.is_some() {
            let now = Instant::now();
            if let Some(m) = &s.metrics {
                m.acquire_wait(
                    clock
                        .start
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                );
            }
            Some(now)
        } else {
            None
        };
        Object {
            obj: Some(obj),
            slot: index,
            pool: self.clone(),
            acquired_at,
            caller,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nums;

    impl Manager for Nums {
        type Object = u64;
        type Error = std::io::Error;

        async fn create(&self) -> Result<u64, std::io::Error> {
            Ok(7)
        }
    }

    #[test]
    fn max_size_zero_is_rejected() {
        let err = Pool::builder(Nums).max_size(0).build().unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                key: "max_size",
                ..
            }
        ));
    }

    #[test]
    fn config_defaults_are_sane() {
        let c = ObjectPoolConfig::default();
        assert!(c.max_size >= 4);
        assert_eq!(c.acquire_timeout, Duration::from_secs(30));
        assert_eq!(c.leak_threshold, None);
    }

    #[tokio::test]
    async fn try_acquire_fails_without_waiting_when_exhausted() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let held = pool.acquire().await.unwrap();
        let err = pool.try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::Timeout { waited, max: 1 } if waited.is_zero()));
        drop(held);
        assert_eq!(*pool.try_acquire().await.unwrap(), 7);
    }
}
