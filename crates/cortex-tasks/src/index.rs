//! Task records by id, and their expiry.
//!
//! Ids are handed out here, in order, so the records of recent tasks sit in a window
//! indexed by `id - base`: inserting is a push at the back, a lookup is arithmetic, and
//! expiring is clearing a slot and trimming the front. A hash map would do the same
//! work with a hash and a probe of a cold bucket for every task, and it is those cache
//! misses that dominate a no-op task's cost.
//!
//! One long-running task would pin the front of the window while millions of others
//! pass. So the window is bounded: past `limit` slots, the records at the front move to
//! a small map of stragglers, and memory stays proportional to the records kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::TaskId;

/// Records by id, with the finishing order for expiry.
pub(crate) struct Index<R> {
    /// Id of `window[0]`.
    base: u64,
    window: VecDeque<Option<Arc<R>>>,
    /// Records that left the window while still kept (live, or finished recently).
    stragglers: HashMap<u64, Arc<R>>,
    /// Finished tasks in finishing order.
    finished: VecDeque<(Instant, TaskId)>,
    /// Window length past which the front moves to `stragglers`.
    limit: usize,
}

impl<R> Index<R> {
    /// `kept` is how many records are expected at steady state (finished ones kept
    /// plus live ones); the window holds a few times that before spilling.
    pub(crate) fn new(kept: usize) -> Self {
        Self {
            base: 1,
            window: VecDeque::with_capacity(kept.min(1 << 16)),
            stragglers: HashMap::new(),
            finished: VecDeque::new(),
            limit: kept.saturating_mul(4).max(1024),
        }
    }

    /// Stores a new record under the next id.
    pub(crate) fn insert(&mut self, make: impl FnOnce(TaskId) -> R) -> Arc<R> {
        let id = self.base + self.window.len() as u64;
        let record = Arc::new(make(TaskId::from_u64(id)));
        self.window.push_back(Some(Arc::clone(&record)));
        if self.window.len() > self.limit {
            self.spill();
        }
        record
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<&Arc<R>> {
        let id = id.as_u64();
        if id >= self.base {
            let at = usize::try_from(id - self.base).ok()?;
            self.window.get(at)?.as_ref()
        } else {
            self.stragglers.get(&id)
        }
    }

    /// Forgets a record (one that never ran, or an expired one).
    pub(crate) fn remove(&mut self, id: TaskId) {
        let n = id.as_u64();
        if n >= self.base {
            if let Some(slot) = usize::try_from(n - self.base)
                .ok()
                .and_then(|at| self.window.get_mut(at))
            {
                *slot = None;
            }
            self.trim();
        } else {
            self.stragglers.remove(&n);
        }
    }

    /// Notes a task finished at `now`, then expires records beyond `max` or older than
    /// `retention`.
    pub(crate) fn retire(&mut self, id: TaskId, now: Instant, max: usize, retention: Duration) {
        self.finished.push_back((now, id));
        while let Some(&(at, old)) = self.finished.front() {
            let too_many = self.finished.len() > max;
            if !too_many && now.saturating_duration_since(at) < retention {
                break;
            }
            self.finished.pop_front();
            self.remove(old);
        }
    }

    /// Expires finished records older than `age`; returns how many went.
    pub(crate) fn expire(&mut self, now: Instant, age: Duration) -> usize {
        let mut gone = 0;
        while let Some(&(at, old)) = self.finished.front() {
            if now.saturating_duration_since(at) < age {
                break;
            }
            self.finished.pop_front();
            self.remove(old);
            gone += 1;
        }
        gone
    }

    /// Every record kept.
    pub(crate) fn all(&self) -> Vec<Arc<R>> {
        self.stragglers
            .values()
            .chain(self.window.iter().flatten())
            .cloned()
            .collect()
    }

    fn trim(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
    }

    /// Moves the front half of the window to the stragglers.
    fn spill(&mut self) {
        for _ in 0..self.limit / 2 {
            match self.window.pop_front() {
                Some(Some(record)) => {
                    self.stragglers.insert(self.base, record);
                }
                Some(None) => {}
                None => break,
            }
            self.base += 1;
        }
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_window_and_expire_in_finishing_order() {
        let mut index: Index<u64> = Index::new(4);
        let ids: Vec<TaskId> = (0..10)
            .map(|_| *index.insert(|id| id.as_u64()))
            .map(TaskId::from_u64)
            .collect();
        assert_eq!(ids[0].as_u64(), 1);
        assert_eq!(**index.get(ids[3]).expect("kept"), 4);
        let now = Instant::now();
        // Keep at most 2 finished: finishing 1, 2, 3 expires 1.
        for id in &ids[..3] {
            index.retire(*id, now, 2, Duration::from_secs(60));
        }
        assert!(index.get(ids[0]).is_none());
        assert!(index.get(ids[1]).is_some());
        assert_eq!(index.all().len(), 9);
        assert_eq!(
            index.expire(now + Duration::from_secs(61), Duration::from_secs(60)),
            2
        );
        assert_eq!(index.all().len(), 7);
    }

    #[test]
    fn a_long_lived_record_spills_instead_of_pinning_the_window() {
        let mut index: Index<u64> = Index::new(1);
        let first = TaskId::from_u64(*index.insert(|id| id.as_u64()));
        let now = Instant::now();
        for _ in 0..100_000 {
            let id = TaskId::from_u64(*index.insert(|id| id.as_u64()));
            index.retire(id, now, 10, Duration::from_secs(60));
        }
        // The first record is still there, and the window stayed bounded.
        assert_eq!(**index.get(first).expect("kept"), 1);
        assert!(index.window.len() <= index.limit);
        assert_eq!(index.all().len(), 11);
        index.remove(first);
        assert!(index.get(first).is_none());
    }
}
