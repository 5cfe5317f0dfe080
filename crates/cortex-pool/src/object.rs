//! The generic async object pool: [`Manager`], [`Pool`], [`Object`].
//!
//! Capacity is `max_size` *slots* (see `slots.rs`): idle (holding an object), empty
//! (free to create one in) or held by a caller. Taking and returning a slot is one
//! atomic read-modify-write on a bitmap word; the waiter list (a mutex) is touched
//! only when a caller has to wait, and a returned slot is then handed straight to
//! the oldest waiter, so waiters are served in order and a wake-up is never lost.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cortex_metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::slots::{Slots, Taken};
use crate::{BoxError, Error, PoolMetrics, PoolStatus, Result};

/// The largest `max_size` accepted: the slots are allocated up front.
const MAX_SIZE_LIMIT: usize = 1 << 16;

/// Creates, resets and checks the objects of a [`Pool`].
///
/// Unlike deadpool's `Manager`, `recycle` returns the manager's own error (the pool
/// wraps it in [`Error::Backend`]) and has a default, because many pooled objects
/// (buffers, parsers, clients without session state) need no reset; the cheap
/// synchronous [`is_valid`](Manager::is_valid) check is separate so a pool can run it
/// even with recycling turned off.
pub trait Manager: Send + Sync + 'static {
    /// The pooled object.
    type Object: Send + 'static;
    /// What `create` and `recycle` fail with.
    type Error: Into<BoxError> + Send + 'static;

    /// Create a new object.
    ///
    /// # Errors
    /// The backend's error; the pool returns it as [`Error::Backend`] and frees the
    /// slot.
    fn create(&self) -> impl Future<Output = Result<Self::Object, Self::Error>> + Send;

    /// Reset `obj` before it is handed out again. Default: nothing to reset.
    ///
    /// # Errors
    /// Any error drops the object; the pool creates a replacement.
    fn recycle(
        &self,
        obj: &mut Self::Object,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// A cheap synchronous check run before an idle object is handed out; `false`
    /// drops it and creates a replacement. Default: `true`.
    fn is_valid(&self, obj: &Self::Object) -> bool {
        let _ = obj;
        true
    }
}

/// Settings of a [`Pool`]: build one with [`Pool::builder`] or pass this to
/// [`PoolBuilder::config`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectPoolConfig {
    /// The most objects the pool creates (idle plus in use); they are created lazily.
    ///
    /// Default: twice the available parallelism, at least 4: enough for every
    /// worker thread to hold one object while another holder awaits I/O.
    pub max_size: usize,
    /// How long [`Pool::acquire`] may take in total (waiting for a slot, recycling,
    /// creating) before it fails with [`Error::Timeout`]. In seconds in config files.
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
    /// Run [`Manager::recycle`] before handing out an idle object.
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

/// Counters of a [`Pool`] since it was built, plus its current usage: a plain,
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
    /// Objects dropped because [`Manager::recycle`] failed.
    pub recycle_failed: u64,
    /// Objects dropped because [`Manager::is_valid`] said `false`.
    pub invalid: u64,
    /// Objects taken out with [`Object::detach`].
    pub detached: u64,
    /// Objects dropped for any reason (recycle failure, invalid, detached, closed).
    pub closed: u64,
    /// The most objects held by callers at once.
    pub max_used: usize,
    /// Gets that failed with [`Error::Timeout`].
    pub timeouts: u64,
}

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
        Ok(Pool {
            shared: Arc::new(Shared {
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
                sweeper: tokio::sync::Notify::new(),
                manager: self.manager,
                config: self.config,
                metrics: self.metrics,
                stats: Counters::default(),
            }),
        })
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
        self.acquire_inner(self.shared.config.acquire_timeout, true, caller)
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
        self.acquire_inner(timeout, true, caller)
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
        self.acquire_inner(self.shared.config.acquire_timeout, false, caller)
    }

    /// Renamed [`acquire`](Self::acquire): one verb for borrowing in every pool.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    #[deprecated(note = "use acquire")]
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        self.acquire_inner(self.shared.config.acquire_timeout, true, caller)
    }

    /// Renamed [`acquire_within`](Self::acquire_within).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    #[deprecated(note = "use acquire_within")]
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        self.acquire_inner(timeout, true, caller)
    }

    /// Renamed [`try_acquire`](Self::try_acquire).
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    #[deprecated(note = "use try_acquire")]
    #[track_caller]
    pub fn try_get(&self) -> impl Future<Output = Result<Object<M>>> + Send + '_ {
        let caller = Location::caller();
        self.acquire_inner(self.shared.config.acquire_timeout, false, caller)
    }

    /// The [`PoolStatus`] view: a subset of [`stats`](Self::stats).
    #[deprecated(note = "use stats")]
    pub fn status(&self) -> PoolStatus {
        self.usage()
    }

    fn usage(&self) -> PoolStatus {
        let s = &*self.shared;
        PoolStatus {
            size: s.size.load(Relaxed),
            idle: s.slots.idle(),
            in_use: s.in_use.load(Relaxed),
            max: s.config.max_size,
            waiting: s.waiting.load(Relaxed),
        }
    }

    /// Counters since the pool was built, plus current usage.
    pub fn stats(&self) -> ObjectPoolStats {
        let s = &*self.shared;
        let c = &s.stats;
        let status = self.usage();
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

/// An object taken from a [`Pool`]; dereferences to it and returns it to the pool
/// when dropped, also when the holder panics or its future is cancelled.
pub struct Object<M: Manager> {
    /// `Some` until dropped or detached.
    obj: Option<M::Object>,
    slot: usize,
    pool: Pool<M>,
    acquired_at: Option<Instant>,
    caller: &'static Location<'static>,
}

impl<M: Manager> Object<M> {
    /// Take the object out of the pool for good (a broken connection, say): its
    /// slot is freed and a later get creates a replacement.
    pub fn detach(mut this: Self) -> M::Object {
        let Some(obj) = this.obj.take() else {
            unreachable!("an Object holds its object until dropped or detached")
        };
        this.record_hold();
        let s = &*this.pool.shared;
        s.in_use.fetch_sub(1, Relaxed);
        s.stats.detached.fetch_add(1, Relaxed);
        s.object_closed();
        s.put(Taken::Empty(this.slot));
        obj
    }

    /// The pool this object belongs to.
    pub fn pool(this: &Self) -> &Pool<M> {
        &this.pool
    }

    fn record_hold(&self) {
        let Some(at) = self.acquired_at else { return };
        let held = at.elapsed();
        let s = &*self.pool.shared;
        let threshold = s.config.leak_threshold.unwrap_or(Duration::ZERO);
        // One place decides what a leak is, for every pool of this crate.
        match &s.metrics {
            Some(m) => m.release("pooled object", held, threshold, self.caller),
            None => PoolMetrics::disabled().release("pooled object", held, threshold, self.caller),
        }
    }
}

impl<M: Manager> Deref for Object<M> {
    type Target = M::Object;

    fn deref(&self) -> &M::Object {
        match &self.obj {
            Some(obj) => obj,
            None => unreachable!("an Object holds its object until dropped or detached"),
        }
    }
}

impl<M: Manager> DerefMut for Object<M> {
    fn deref_mut(&mut self) -> &mut M::Object {
        match &mut self.obj {
            Some(obj) => obj,
            None => unreachable!("an Object holds its object until dropped or detached"),
        }
    }
}

impl<M: Manager> Drop for Object<M> {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else { return };
        self.record_hold();
        let s = &*self.pool.shared;
        s.in_use.fetch_sub(1, Relaxed);
        s.put(Taken::Object(self.slot, obj));
    }
}

impl<M: Manager> fmt::Debug for Object<M>
where
    M::Object: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("obj", &self.obj)
            .field("acquired_at", &self.caller)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------
// Internals.

/// `repr(C)` keeps the fields every get and return touch together, next to the
/// `Arc`'s reference count which they touch too.
#[repr(C)]
struct Shared<M: Manager> {
    /// Objects held by callers.
    in_use: AtomicUsize,
    /// Objects that exist, including ones being created or recycled.
    size: AtomicUsize,
    /// Mirrors `waiters.queue.len()` so the return path can skip the lock.
    waiting: AtomicUsize,
    closed: AtomicBool,
    waiters: Mutex<WaitList<M::Object>>,
    /// Wakes the sweeper when a waiter needs it sooner than planned.
    sweeper: tokio::sync::Notify,
    config: ObjectPoolConfig,
    metrics: Option<PoolMetrics>,
    stats: Counters,
    slots: Slots<M::Object>,
    manager: M,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    /// Bumped on every reuse, so sharded per thread.
    reused: Counter,
    recycle_failed: AtomicU64,
    invalid: AtomicU64,
    detached: AtomicU64,
    closed: AtomicU64,
    timeouts: AtomicU64,
    max_used: AtomicUsize,
}

struct WaitList<T> {
    queue: VecDeque<Arc<Node<T>>>,
    closed: bool,
    /// A sweeper task is running for this pool.
    sweeping: bool,
    /// When the sweeper wakes next (it is told when a waiter needs it sooner).
    sweep_at: Option<Instant>,
}

enum Outcome<T> {
    Granted(Taken<T>),
    Closed,
    TimedOut,
}

/// A queued waiter. Its outcome is set under the wait-list lock, so a waiter that
/// finds none while holding that lock is still in the queue.
struct Node<T> {
    state: Mutex<NodeState<T>>,
    deadline: Instant,
}

struct NodeState<T> {
    waker: Option<Waker>,
    outcome: Option<Outcome<T>>,
}

impl<T> Node<T> {
    fn lock(&self) -> MutexGuard<'_, NodeState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set the outcome; the caller wakes the returned waker after unlocking.
    fn finish(&self, outcome: Outcome<T>) -> Option<Waker> {
        let mut st = self.lock();
        st.outcome = Some(outcome);
        st.waker.take()
    }
}

impl<M: Manager> Shared<M> {
    fn lock_waiters(&self) -> MutexGuard<'_, WaitList<M::Object>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Store a slot where `Slots::take` finds it.
    #[inline]
    fn stash(&self, t: Taken<M::Object>) {
        match t {
            Taken::Object(i, obj) => self.slots.put_object(i, obj),
            Taken::Empty(i) => self.slots.put_empty(i),
        }
    }

    /// Return a slot: to the oldest waiter if there is one, else to the pool.
    #[inline]
    fn put(&self, t: Taken<M::Object>) {
        if self.closed.load(Relaxed) {
            self.discard(t);
            return;
        }
        if self.waiting.load(Relaxed) == 0 {
            self.stash(t);
            // Pairs with the fence in `Waiter::poll`: either that waiter's retry sees
            // the slot just stashed, or this load sees the waiter and hands it over.
            fence(SeqCst);
            if self.waiting.load(Relaxed) != 0 {
                self.hand_over();
            }
            if self.closed.load(Relaxed) {
                // `close` may have drained the queue before our push landed.
                self.drain_idle();
            }
            return;
        }
        let mut list = self.lock_waiters();
        match list.queue.pop_front() {
            Some(node) => {
                self.waiting.fetch_sub(1, SeqCst);
                let waker = node.finish(Outcome::Granted(t));
                drop(list);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            None => {
                // Under the lock no waiter can queue between this and its retry.
                self.stash(t);
            }
        }
    }

    /// Give stashed slots to queued waiters.
    #[cold]
    fn hand_over(&self) {
        loop {
            let mut list = self.lock_waiters();
            if list.queue.is_empty() {
                return;
            }
            let Some(t) = self.slots.take() else { return };
            let Some(node) = list.queue.pop_front() else {
                self.stash(t);
                return;
            };
            self.waiting.fetch_sub(1, SeqCst);
            let waker = node.finish(Outcome::Granted(t));
            drop(list);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// A slot returned to a closed pool: drop its object.
    #[cold]
    fn discard(&self, t: Taken<M::Object>) {
        match t {
            Taken::Object(i, obj) => {
                drop(obj);
                self.object_closed();
                self.slots.put_empty(i);
            }
            Taken::Empty(i) => self.slots.put_empty(i),
        }
    }

    #[cold]
    fn drain_idle(&self) {
        self.slots.drain_idle(|obj| {
            drop(obj);
            self.object_closed();
        });
    }

    /// An object stopped existing.
    fn object_closed(&self) {
        self.size.fetch_sub(1, Relaxed);
        self.stats.closed.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.closed();
        }
    }

    #[cold]
    fn timed_out(&self, clock: &Deadline) -> Error {
        self.stats.timeouts.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.timeout();
        }
        Error::Timeout {
            waited: clock.waited(),
            max: self.config.max_size,
        }
    }
}

/// Holds one slot while a get recycles or creates its object; dropping it (a
/// failed create, a cancelled get) frees the slot. Forgotten when handed out.
struct Slot<'a, M: Manager> {
    shared: &'a Shared<M>,
    index: usize,
    /// `size` counts an object for this slot.
    counted: bool,
}

impl<M: Manager> Slot<'_, M> {
    fn object_dropped(&mut self) {
        self.shared.object_closed();
        self.counted = false;
    }
}

impl<M: Manager> Drop for Slot<'_, M> {
    fn drop(&mut self) {
        if self.counted {
            // Created objects are counted by `closed`; a failed create was not one.
            self.shared.size.fetch_sub(1, Relaxed);
        }
        self.shared.put(Taken::Empty(self.index));
    }
}

/// The time budget of one get, started lazily.
struct Deadline {
    start: Option<Instant>,
    deadline: Option<Instant>,
    timeout: Duration,
}

impl Deadline {
    fn deadline(&mut self) -> Instant {
        if let Some(d) = self.deadline {
            return d;
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        // An absurd timeout waits "forever" (30 years) rather than overflowing.
        let d = start
            .checked_add(self.timeout)
            .or_else(|| start.checked_add(Duration::from_secs(30 * 365 * 86_400)))
            .unwrap_or(start);
        self.deadline = Some(d);
        d
    }

    fn waited(&self) -> Duration {
        self.start.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Run `fut` under the get's deadline, arming the timer only if it does not finish
/// on its first poll. `None` on timeout.
async fn bounded<F: Future>(fut: F, clock: &mut Deadline) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(v);
    }
    tokio::time::timeout_at(clock.deadline(), fut).await.ok()
}

/// Waits in the queue for a slot. Dropping it before it completes gives back a slot
/// already granted to it, or leaves the queue.
struct Waiter<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    node: Option<Arc<Node<M::Object>>>,
    deadline: Instant,
}

impl<'a, M: Manager> Waiter<'a, M> {
    fn new(shared: &'a Arc<Shared<M>>, deadline: Instant) -> Self {
        Self {
            shared,
            node: None,
            deadline,
        }
    }
}

impl<M: Manager> Future for Waiter<'_, M> {
    type Output = Result<Taken<M::Object>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let s = this.shared;
        let Some(node) = &this.node else {
            let mut list = s.lock_waiters();
            if list.closed {
                return Poll::Ready(Err(Error::Closed));
            }
            s.waiting.fetch_add(1, SeqCst);
            // Pairs with the fence in `Shared::put`.
            fence(SeqCst);
            if let Some(t) = s.slots.take() {
                s.waiting.fetch_sub(1, SeqCst);
                return Poll::Ready(Ok(t));
            }
            let node = Arc::new(Node {
                state: Mutex::new(NodeState {
                    waker: Some(cx.waker().clone()),
                    outcome: None,
                }),
                deadline: this.deadline,
            });
            list.queue.push_back(Arc::clone(&node));
            let deadline = this.deadline;
            if !list.sweeping {
                list.sweeping = true;
                list.sweep_at = Some(deadline);
                drop(list);
                tokio::spawn(sweep(Arc::downgrade(this.shared)));
            } else if list.sweep_at.is_none_or(|at| deadline < at) {
                // A shorter timeout than the sweeper is sleeping for: wake it early.
                list.sweep_at = Some(deadline);
                drop(list);
                s.sweeper.notify_one();
            } else {
                drop(list);
            }
            this.node = Some(node);
            return Poll::Pending;
        };
        let mut st = node.lock();
        match st.outcome.take() {
            Some(outcome) => {
                drop(st);
                this.node = None;
                match outcome {
                    Outcome::Granted(t) => Poll::Ready(Ok(t)),
                    Outcome::Closed => Poll::Ready(Err(Error::Closed)),
                    Outcome::TimedOut => Poll::Ready(Err(Error::Timeout {
                        waited: Duration::ZERO,
                        max: s.config.max_size,
                    })),
                }
            }
            None => {
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<M: Manager> Drop for Waiter<'_, M> {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else { return };
        let s = self.shared;
        let mut list = s.lock_waiters();
        let outcome = node.lock().outcome.take();
        match outcome {
            Some(Outcome::Granted(t)) => {
                drop(list);
                s.put(t);
            }
            Some(Outcome::Closed | Outcome::TimedOut) => {}
            None => {
                if let Some(i) = list.queue.iter().position(|n| Arc::ptr_eq(n, &node)) {
                    list.queue.remove(i);
                    s.waiting.fetch_sub(1, SeqCst);
                }
            }
        }
    }
}

/// Times out expired waiters of one pool: one task and one timer for all of them,
/// sleeping until the earliest deadline. It ends when no waiter is left (the next
/// waiter starts another) or the pool is gone.
async fn sweep<M: Manager>(pool: std::sync::Weak<Shared<M>>) {
    loop {
        let (next, notified) = {
            let Some(s) = pool.upgrade() else { return };
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut list = s.lock_waiters();
            if list.closed || list.queue.is_empty() {
                list.sweeping = false;
                list.sweep_at = None;
                return;
            }
            let before = list.queue.len();
            list.queue.retain(|node| {
                let keep = node.deadline > now;
                if !keep {
                    expired.push(Arc::clone(node));
                }
                keep
            });
            s.waiting.fetch_sub(before - list.queue.len(), SeqCst);
            let next = list.queue.iter().map(|n| n.deadline).min();
            list.sweep_at = next;
            if next.is_none() {
                list.sweeping = false;
            }
            drop(list);
            for node in expired {
                if let Some(w) = node.finish(Outcome::TimedOut) {
                    w.wake();
                }
            }
            let Some(next) = next else { return };
            // `notify_one` keeps a permit while the sweeper is not waiting yet, so a
            // nudge sent before it sleeps is not lost.
            let shared = Arc::clone(&s);
            (next, async move { shared.sweeper.notified().await })
        };
        let _ = tokio::time::timeout_at(next, notified).await;
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
