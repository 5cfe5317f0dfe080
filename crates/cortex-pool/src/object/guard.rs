//! [`Object`]: the guard of a borrowed object, returned to its pool on drop.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::{Manager, Pool};
use crate::PoolMetrics;
use crate::slots::Taken;

/// An object taken from a [`Pool`](super::Pool); dereferences to it and returns it to the pool
/// when dropped, also when the holder panics or its future is cancelled.
pub struct Object<M: Manager> {
    /// `Some` until dropped or detached.
    pub(super) obj: Option<M::Object>,
    pub(super) slot: usize,
    pub(super) pool: Pool<M>,
    pub(super) acquired_at: Option<Instant>,
    pub(super) caller: &'static Location<'static>,
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
