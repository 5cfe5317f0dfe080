use serde::{Deserialize, Serialize};

/// What a database or Redis pool is doing right now: what `DbPool::stats()` and
/// `RedisPool::stats()` return (the object pool's and the limiter's `stats()` carry
/// these figures and their own counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Objects that exist (idle + in use).
    pub size: usize,
    /// Objects waiting in the pool.
    pub idle: usize,
    /// Objects held by callers.
    pub in_use: usize,
    /// The most objects the pool will create.
    pub max: usize,
    /// Callers waiting for an object.
    pub waiting: usize,
}

/// Counts a caller as waiting for as long as it lives: dropped on every exit of an
/// acquire, including when the caller's future is cancelled mid-wait.
pub(crate) struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    pub(crate) fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
