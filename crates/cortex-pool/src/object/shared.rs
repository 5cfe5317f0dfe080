//! The state a pool and its guards share, and how a slot goes back to the pool (to
//! the oldest waiter first).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use cortex_metrics::Counter;
use tokio::time::Instant;

use super::Manager;
use super::config::ObjectPoolConfig;
use super::deadline::Deadline;
use crate::slots::{Slots, Taken};
use crate::{Error, PoolMetrics, PoolStatus};

/// `repr(C)` keeps the fields every get and return touch together, next to the
/// `Arc`'s reference count which they touch too.
#[repr(C)]
pub(super) struct Shared<M: Manager> {
    /// Objects held by callers.
    pub(super) in_use: AtomicUsize,
    /// Objects that exist, including ones being created or recycled.
    pub(super) size: AtomicUsize,
    /// Mirrors `waiters.queue.len()` so the return path can skip the lock.
    pub(super) waiting: AtomicUsize,
    pub(super) closed: AtomicBool,
    pub(super) waiters: Mutex<WaitList<M::Object>>,
    /// Wakes the sweeper when a waiter needs it sooner than planned, or the pool is
    /// dropped. Its own `Arc`, so the sleeping sweeper holds this and a `Weak` of the
    /// pool, never the pool itself: a dropped pool frees its objects at once.
    pub(super) sweeper: Arc<tokio::sync::Notify>,
    pub(super) config: ObjectPoolConfig,
    pub(super) metrics: Option<PoolMetrics>,
    pub(super) stats: Counters,
    pub(super) slots: Slots<M::Object>,
    pub(super) manager: M,
}

impl<M: Manager> Drop for Shared<M> {
    fn drop(&mut self) {
        // A sweeper asleep until a far deadline wakes, finds the pool gone and ends.
        self.sweeper.notify_one();
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) created: AtomicU64,
    /// Bumped on every reuse, so sharded per thread.
    pub(super) reused: Counter,
    pub(super) recycle_failed: AtomicU64,
    pub(super) invalid: AtomicU64,
    pub(super) detached: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) max_used: AtomicUsize,
}

pub(super) struct WaitList<T> {
    pub(super) queue: VecDeque<Arc<Node<T>>>,
    pub(super) closed: bool,
    /// A sweeper task is running for this pool.
    pub(super) sweeping: bool,
    /// When the sweeper wakes next (it is told when a waiter needs it sooner).
    pub(super) sweep_at: Option<Instant>,
}

pub(super) enum Outcome<T> {
    Granted(Taken<T>),
    Closed,
    TimedOut,
}

/// A queued waiter. Its outcome is set under the wait-list lock, so a waiter that
/// finds none while holding that lock is still in the queue.
pub(super) struct Node<T> {
    pub(super) state: Mutex<NodeState<T>>,
    pub(super) deadline: Instant,
}

pub(super) struct NodeState<T> {
    pub(super) waker: Option<Waker>,
    pub(super) outcome: Option<Outcome<T>>,
}

impl<T> Node<T> {
    pub(super) fn lock(&self) -> MutexGuard<'_, NodeState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set the outcome; the caller wakes the returned waker after unlocking.
    pub(super) fn finish(&self, outcome: Outcome<T>) -> Option<Waker> {
        let mut st = self.lock();
        st.outcome = Some(outcome);
        st.waker.take()
    }
}

impl<M: Manager> Shared<M> {
    /// Current usage, from atomics only: what `stats()` and the level gauges read.
    pub(super) fn status(&self) -> PoolStatus {
        PoolStatus {
            size: self.size.load(Relaxed),
            idle: self.slots.idle(),
            in_use: self.in_use.load(Relaxed),
            max: self.config.max_size,
            waiting: self.waiting.load(Relaxed),
        }
    }

    pub(super) fn lock_waiters(&self) -> MutexGuard<'_, WaitList<M::Object>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Store a slot where `Slots::take` finds it.
    #[inline]
    pub(super) fn stash(&self, t: Taken<M::Object>) {
        match t {
            Taken::Object(i, obj) => self.slots.put_object(i, obj),
            Taken::Empty(i) => self.slots.put_empty(i),
        }
    }

    /// Return a slot: to the oldest waiter if there is one, else to the pool.
    #[inline]
    pub(super) fn put(&self, t: Taken<M::Object>) {
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
    pub(super) fn hand_over(&self) {
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
    pub(super) fn discard(&self, t: Taken<M::Object>) {
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
    pub(super) fn drain_idle(&self) {
        self.slots.drain_idle(|obj| {
            drop(obj);
            self.object_closed();
        });
    }

    /// An object stopped existing.
    pub(super) fn object_closed(&self) {
        self.size.fetch_sub(1, Relaxed);
        self.stats.closed.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.closed();
        }
    }

    #[cold]
    pub(super) fn timed_out(&self, clock: &Deadline) -> Error {
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
pub(super) struct Slot<'a, M: Manager> {
    pub(super) shared: &'a Shared<M>,
    pub(super) index: usize,
    /// `size` counts an object for this slot.
    pub(super) counted: bool,
}

impl<M: Manager> Slot<'_, M> {
    pub(super) fn object_dropped(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Pool;

    struct Nums;

    impl Manager for Nums {
        type Object = u64;
        type Error = std::io::Error;

        async fn create(&self) -> Result<u64, std::io::Error> {
            Ok(7)
        }
    }

    fn node(deadline: Instant) -> Arc<Node<u64>> {
        Arc::new(Node {
            state: Mutex::new(NodeState {
                waker: Some(Waker::noop().clone()),
                outcome: None,
            }),
            deadline,
        })
    }

    #[test]
    fn finishing_a_node_sets_its_outcome_and_hands_back_its_waker() {
        let n = node(Instant::now());
        assert!(n.finish(Outcome::Closed).is_some());
        assert!(matches!(n.lock().outcome, Some(Outcome::Closed)));
        // A second finish finds no waker left to wake.
        assert!(n.finish(Outcome::TimedOut).is_none());
    }

    #[test]
    fn a_returned_slot_goes_to_the_oldest_waiter() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let s = &*pool.shared;
        let Some(Taken::Empty(i)) = s.slots.take() else {
            panic!("a new pool has an empty slot")
        };
        let (first, second) = (node(Instant::now()), node(Instant::now()));
        {
            let mut list = s.lock_waiters();
            list.queue.push_back(Arc::clone(&first));
            list.queue.push_back(Arc::clone(&second));
        }
        s.waiting.store(2, SeqCst);
        s.put(Taken::Empty(i));
        assert!(matches!(
            first.lock().outcome,
            Some(Outcome::Granted(Taken::Empty(j))) if j == i
        ));
        assert!(second.lock().outcome.is_none());
        assert_eq!(s.waiting.load(SeqCst), 1);
        assert_eq!(s.lock_waiters().queue.len(), 1);
        // Nothing was stashed: the slot went to the waiter.
        assert!(s.slots.take().is_none());
    }

    #[test]
    fn a_slot_returned_with_nobody_waiting_is_stashed() {
        let pool = Pool::builder(Nums).max_size(2).build().unwrap();
        let s = &*pool.shared;
        let Some(Taken::Empty(i)) = s.slots.take() else {
            panic!("a new pool has an empty slot")
        };
        s.size.fetch_add(1, Relaxed);
        s.put(Taken::Object(i, 9));
        assert_eq!(s.slots.idle(), 1);
        assert!(matches!(s.slots.take(), Some(Taken::Object(j, 9)) if j == i));
    }

    #[test]
    fn a_slot_returned_to_a_closed_pool_drops_its_object() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let s = &*pool.shared;
        let Some(Taken::Empty(i)) = s.slots.take() else {
            panic!("a new pool has an empty slot")
        };
        s.size.fetch_add(1, Relaxed);
        pool.close();
        s.put(Taken::Object(i, 9));
        assert_eq!(s.slots.idle(), 0);
        assert_eq!(s.size.load(Relaxed), 0);
        assert_eq!(s.stats.closed.load(Relaxed), 1);
        // The slot itself is free again (empty).
        assert!(matches!(s.slots.take(), Some(Taken::Empty(j)) if j == i));
    }
}
