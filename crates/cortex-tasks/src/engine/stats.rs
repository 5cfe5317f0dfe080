//! The engine's counters (per level, per worker slot) and its metric series.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::QueueStats;

/// Counters of one level. Producers write only `accepted` (under the queue's lock); each worker writes only its
/// own `served` slot (one more slot takes cancels and retries from elsewhere). Every
/// slot has its own cache line, so no line bounces between threads per task; gauges
/// (queued, live) are differences of these monotonic counts, summed when read.
pub(super) struct LevelStats {
    pub(super) accepted: Accepted,
    pub(super) served: Box<[Served]>,
}

#[derive(Default)]
#[repr(align(128))]
pub(super) struct Accepted {
    pub(super) enqueued: AtomicU64,
}

#[derive(Default)]
#[repr(align(128))]
pub(super) struct Served {
    /// Left the queue: taken by a worker, or removed by a cancel.
    pub(super) taken: AtomicU64,
    /// Put back after a failed attempt's backoff.
    pub(super) requeued: AtomicU64,
    /// Attempts running now (each slot adds and subtracts its own).
    pub(super) running: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) cancelled: AtomicU64,
    pub(super) retried: AtomicU64,
}

/// Adds `n` (wrapping: `u64::MAX` subtracts one) to a count that only the caller
/// writes (a worker's own slot, or a count written under a lock): a load and a store, with no locked instruction. A
/// locked one is a full barrier on x86 and waits for every store before it, among
/// them the cold writes to the task's record; three per task cost more than the
/// rest of a worker's bookkeeping.
pub(super) fn own_add(count: &AtomicU64, n: u64) {
    count.store(
        count.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Release,
    );
}

impl LevelStats {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            accepted: Accepted::default(),
            served: (0..slots).map(|_| Served::default()).collect(),
        }
    }

    pub(super) fn sum(&self, field: impl Fn(&Served) -> &AtomicU64) -> u64 {
        self.served.iter().fold(0u64, |acc, s| {
            acc.wrapping_add(field(s).load(Ordering::SeqCst))
        })
    }

    pub(super) fn queued(&self) -> u64 {
        let taken = self.sum(|s| &s.taken);
        let requeued = self.sum(|s| &s.requeued);
        let enqueued = self.accepted.enqueued.load(Ordering::SeqCst);
        (enqueued + requeued).saturating_sub(taken)
    }

    pub(super) fn finished(&self) -> u64 {
        self.sum(|s| &s.completed) + self.sum(|s| &s.failed) + self.sum(|s| &s.cancelled)
    }
}

/// Metric handles, looked up once.
///
/// One family per measure, the queue's name a label (`queue="<name>"`), so queues
/// aggregate and compare: `tasks.wait` and `tasks.run` (exported in seconds),
/// `tasks.completed`, `tasks.failed`, `tasks.cancelled`, `tasks.retried` counters; the
/// `tasks.depth` and `tasks.running` gauges are read at scrape time
/// ([`Engine::register_gauges`]).
pub(super) struct Recorders {
    pub(super) wait: Arc<cortex_metrics::Histogram>,
    pub(super) run: Arc<cortex_metrics::Histogram>,
    pub(super) completed: Arc<cortex_metrics::Counter>,
    pub(super) failed: Arc<cortex_metrics::Counter>,
    pub(super) cancelled: Arc<cortex_metrics::Counter>,
    pub(super) retried: Arc<cortex_metrics::Counter>,
}

/// Reads one count of a queue's stats.
type Field = fn(&QueueStats) -> u64;

/// The label key of every in-process queue series.
const QUEUE_LABEL: &str = "queue";

impl Recorders {
    /// The series of the queue `name` in `m`, labeled `queue="<name>"`.
    pub(super) fn new(m: &cortex_metrics::Metrics, name: &str) -> Self {
        let labels = [(QUEUE_LABEL, name)];
        // `queue` is a valid label name, so these cannot fail; the unlabeled series is
        // the fallback that keeps recording if a registry ever refused one.
        let seconds = |what: &str| {
            m.histogram_seconds_with(what, &labels)
                .unwrap_or_else(|_| m.histogram_seconds(what))
        };
        let counter = |what: &str| {
            m.counter_with(what, &labels)
                .unwrap_or_else(|_| m.counter(what))
        };
        Self {
            wait: seconds("tasks.wait"),
            run: seconds("tasks.run"),
            completed: counter("tasks.completed"),
            failed: counter("tasks.failed"),
            cancelled: counter("tasks.cancelled"),
            retried: counter("tasks.retried"),
        }
    }
}

impl Engine {
    /// Registers the `tasks.depth` (queued, not yet running) and `tasks.running` gauges
    /// of this queue in `m`, read when scraped. They hold a `Weak` so the registry never
    /// keeps a closed queue alive, and read `NaN` once it is gone; reading is a sum of
    /// atomics, never a lock.
    pub(super) fn register_gauges(self: &Arc<Self>, m: &cortex_metrics::Metrics) {
        let labels = [(QUEUE_LABEL, self.config.name.as_str())];
        let gauges: [(&str, Field); 2] = [
            ("tasks.depth", |s| s.queued),
            ("tasks.running", |s| s.running),
        ];
        for (name, field) in gauges {
            let weak = Arc::downgrade(self);
            let read = move || {
                weak.upgrade()
                    .map_or(f64::NAN, |e| field(&e.stats(None)) as f64)
            };
            // Cannot fail for the valid label name `queue`; a refused gauge only goes
            // unexported, it never stops the queue.
            if let Err(e) = m.gauge_fn(name, &labels, read) {
                tracing::warn!(error = %e, gauge = name, "task queue gauge not registered");
            }
        }
    }

    pub(crate) fn stats(&self, level: Option<usize>) -> QueueStats {
        let levels: &[LevelStats] = match level {
            Some(l) => std::slice::from_ref(&self.stats[l]),
            None => &self.stats,
        };
        let mut out = QueueStats {
            workers: self.config.workers as u64,
            ..QueueStats::default()
        };
        for l in levels {
            out.completed += l.sum(|s| &s.completed);
            out.failed += l.sum(|s| &s.failed);
            out.cancelled += l.sum(|s| &s.cancelled);
            out.queued += l.queued();
            out.running += l.sum(|s| &s.running);
            out.retried += l.sum(|s| &s.retried);
            out.enqueued += l.accepted.enqueued.load(Ordering::SeqCst);
        }
        out
    }

    /// Tasks accepted and not yet finished. Finished counts are read before accepted
    /// ones: both only grow, so a zero here means everything accepted so far finished.
    pub(crate) fn live(&self) -> u64 {
        let finished: u64 = self.stats.iter().map(LevelStats::finished).sum();
        let accepted: u64 = self
            .stats
            .iter()
            .map(|l| l.accepted.enqueued.load(Ordering::SeqCst))
            .sum();
        accepted.saturating_sub(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_differences_of_monotonic_counts_over_every_slot() {
        let l = LevelStats::new(3);
        l.accepted.enqueued.store(10, Ordering::SeqCst);
        l.served[0].taken.store(4, Ordering::SeqCst);
        l.served[2].taken.store(3, Ordering::SeqCst);
        l.served[1].requeued.store(2, Ordering::SeqCst);
        // 10 accepted + 2 put back after a retry - 7 taken.
        assert_eq!(l.queued(), 5);
        l.served[0].completed.store(3, Ordering::SeqCst);
        l.served[1].failed.store(1, Ordering::SeqCst);
        l.served[2].cancelled.store(2, Ordering::SeqCst);
        assert_eq!(l.finished(), 6);
        // Counts read while others move never go negative.
        l.served[1].taken.store(100, Ordering::SeqCst);
        assert_eq!(l.queued(), 0);
    }
}
