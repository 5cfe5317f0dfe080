//! A small synchronous pool for cheap reusable objects such as buffers.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

type Factory<T> = Box<dyn Fn() -> T + Send + Sync>;
type Reset<T> = Box<dyn Fn(&mut T) + Send + Sync>;

/// A pool of cheap objects that never blocks: [`acquire`](Self::acquire) reuses an idle
/// object or makes a new one, and a returned object is kept only while fewer than
/// `max_idle` are idle. Cheap to clone: clones share the pool.
///
/// Idle objects are reused last-in first-out, so the most recently used (and most
/// likely cached) buffer goes out first.
///
/// ```
/// use cortex_pool::SyncPool;
///
/// let pool = SyncPool::new(4, || Vec::<u8>::with_capacity(1024), Vec::clear);
/// {
///     let mut buf = pool.acquire();
///     buf.extend_from_slice(b"scratch");
/// }
/// let buf = pool.acquire();
/// assert!(buf.is_empty() && buf.capacity() >= 1024);
/// assert_eq!((pool.stats().created, pool.stats().reused), (1, 1));
/// ```
pub struct SyncPool<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    idle: Mutex<Vec<T>>,
    max_idle: usize,
    factory: Factory<T>,
    reset: Reset<T>,
    created: AtomicU64,
    reused: AtomicU64,
}

/// Counters of a [`SyncPool`]: a plain, serde-able snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPoolStats {
    /// Objects made by the factory.
    pub created: u64,
    /// Gets served by an idle object.
    pub reused: u64,
    /// Idle objects now.
    pub idle: usize,
    /// The most idle objects kept.
    pub max_idle: usize,
}

impl<T> Clone for SyncPool<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for SyncPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncPool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T> SyncPool<T> {
    /// A pool keeping at most `max_idle` idle objects, making new ones with
    /// `factory` and clearing returned ones with `reset`. Nothing is made up front.
    pub fn new(
        max_idle: usize,
        factory: impl Fn() -> T + Send + Sync + 'static,
        reset: impl Fn(&mut T) + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::with_capacity(max_idle.min(1024))),
                max_idle,
                factory: Box::new(factory),
                reset: Box::new(reset),
                created: AtomicU64::new(0),
                reused: AtomicU64::new(0),
            }),
        }
    }

    /// An idle object, or a new one when none is idle. Never waits on other
    /// holders (the idle list's lock is held only for a push or pop).
    pub fn acquire(&self) -> SyncObject<T> {
        let s = &*self.shared;
        let reused = s.lock().pop();
        let obj = match reused {
            Some(obj) => {
                s.reused.fetch_add(1, Relaxed);
                obj
            }
            None => {
                s.created.fetch_add(1, Relaxed);
                (s.factory)()
            }
        };
        SyncObject {
            obj: Some(obj),
            pool: Arc::clone(&self.shared),
        }
    }

    /// Counters and the idle count.
    pub fn stats(&self) -> SyncPoolStats {
        let s = &*self.shared;
        SyncPoolStats {
            created: s.created.load(Relaxed),
            reused: s.reused.load(Relaxed),
            idle: s.lock().len(),
            max_idle: s.max_idle,
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An object from a [`SyncPool`]; dereferences to it and goes back to the pool
/// (reset) when dropped, unless the pool already has `max_idle` idle objects.
pub struct SyncObject<T> {
    /// `Some` until dropped or taken out.
    obj: Option<T>,
    pool: Arc<Shared<T>>,
}

impl<T> SyncObject<T> {
    /// Take the object out of the pool for good.
    pub fn into_inner(mut this: Self) -> T {
        match this.obj.take() {
            Some(obj) => obj,
            None => unreachable!("a SyncObject holds its object until dropped"),
        }
    }
}

impl<T> Deref for SyncObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.obj {
            Some(obj) => obj,
            None => unreachable!("a SyncObject holds its object until dropped"),
        }
    }
}

impl<T> DerefMut for SyncObject<T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.obj {
            Some(obj) => obj,
            None => unreachable!("a SyncObject holds its object until dropped"),
        }
    }
}

impl<T> Drop for SyncObject<T> {
    fn drop(&mut self) {
        let Some(mut obj) = self.obj.take() else {
            return;
        };
        let s = &*self.pool;
        // Check before resetting so a full pool does not pay for the reset; the
        // check is repeated under the lock.
        if s.lock().len() >= s.max_idle {
            return;
        }
        (s.reset)(&mut obj);
        let mut idle = s.lock();
        if idle.len() < s.max_idle {
            idle.push(obj);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for SyncObject<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SyncObject").field(&self.obj).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_max_idle_never_keeps() {
        let pool = SyncPool::new(0, || 1u8, |_| {});
        drop(pool.acquire());
        drop(pool.acquire());
        assert_eq!(pool.stats().created, 2);
        assert_eq!(pool.stats().idle, 0);
    }
}
