//! A level's bound: a count of free places, taken by producers and given back by
//! workers with one atomic operation each. A `tokio::sync::Semaphore` would do, but
//! giving back a permit always takes its internal lock, once per task on the hot path;
//! here the lock inside `Notify` is touched only while a producer actually waits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{Error, Result};

pub(crate) struct Room {
    capacity: usize,
    /// A waiting producer is woken once this many places are free, not at the first:
    /// a producer that outruns its workers then fills a batch of places per wake-up
    /// instead of paying a cross-thread wake-up (and a timer) for every task.
    wake_at: usize,
    free: AtomicUsize,
    waiters: AtomicUsize,
    space: Notify,
    closed: AtomicBool,
}

impl Room {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            wake_at: (capacity / 8).clamp(1, 64),
            free: AtomicUsize::new(capacity),
            waiters: AtomicUsize::new(0),
            space: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Takes a place now, or fails with `QueueFull` / `ShutDown`.
    pub(crate) fn try_take(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        self.free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(drop)
            .map_err(|_| Error::QueueFull {
                capacity: self.capacity,
            })
    }

    /// Takes a place, waiting at most `limit` for one.
    pub(crate) async fn take(&self, limit: Duration) -> Result<()> {
        match self.try_take() {
            Err(Error::QueueFull { .. }) => {}
            done => return done,
        }
        let deadline = tokio::time::Instant::now() + limit;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiters);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Checked after registering: a place given back in between wakes us, or
            // is seen here.
            match self.try_take() {
                Err(Error::QueueFull { .. }) => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::EnqueueTimeout { waited: limit });
            }
        }
    }

    /// Gives a place back.
    pub(crate) fn give(&self) {
        self.give_n(1);
    }

    /// Gives `n` places back at once, waking as many waiting producers (at most).
    pub(crate) fn give_n(&self, n: usize) {
        let free = self.free.fetch_add(n, Ordering::SeqCst) + n;
        if free >= self.wake_at {
            let waiters = self.waiters.load(Ordering::SeqCst);
            for _ in 0..waiters.min(n) {
                self.space.notify_one();
            }
        }
    }

    /// Refuses every producer from now on, waking those that wait.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.space.notify_waiters();
    }
}

/// Counts a waiter out however its wait ends (taken, timed out, or dropped).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
