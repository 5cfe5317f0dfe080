//! What the parts of a worker share: the entries it holds, their outcomes, its
//! counters and metric series.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cortex_metrics::{Counter, Gauge, Histogram};
use redis::streams::StreamId;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::durable::queue::DurableQueue;
use cortex_support::warn::WarnLimiter;

use crate::durable::redis_util::now_ms;
use crate::durable::registry::Registry;
use crate::{Priority, TaskId};

/// Where a delivered entry lives: its stream (by priority index) and its entry id.
pub(super) type Slot = (usize, String);

/// Most outcomes one finish script records.
pub(super) const FINISH_BATCH: usize = 1024;

/// One delivered stream entry.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) prio: Priority,
    pub(super) entry_id: String,
    pub(super) id: TaskId,
    /// The entry's `id` field as written: the scripts check it, so that a foreign or
    /// damaged entry is parked rather than taken for another task.
    pub(super) raw_id: String,
    pub(super) handler: String,
    pub(super) payload: String,
    /// The `traceparent` stored with the task at enqueue; empty when none was.
    pub(super) traceparent: String,
}

impl Entry {
    pub(super) fn slot(&self) -> Slot {
        (self.prio.index(), self.entry_id.clone())
    }

    pub(super) fn new(
        prio: Priority,
        entry_id: String,
        raw_id: String,
        handler: String,
        payload: String,
    ) -> Self {
        Self {
            prio,
            entry_id,
            // A malformed id is parked by the start script before anything uses this.
            id: raw_id.parse().unwrap_or(TaskId::from_u64(0)),
            raw_id,
            handler,
            payload,
            traceparent: String::new(),
        }
    }

    /// The entry with the `traceparent` it was stored with.
    pub(super) fn with_traceparent(mut self, traceparent: String) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub(super) fn parse(prio: Priority, e: StreamId) -> Self {
        let field = |k: &str| e.get::<String>(k).unwrap_or_default();
        let (raw_id, handler, payload) = (field("id"), field("handler"), field("payload"));
        let traceparent = field("traceparent");
        Self::new(prio, e.id, raw_id, handler, payload).with_traceparent(traceparent)
    }

    /// The name of the start request number `seq` of this delivery (see the start
    /// script): the same name twice starts one attempt.
    pub(super) fn token(&self, consumer: &str, seq: u32) -> String {
        format!("{consumer} {} {seq}", self.entry_id)
    }

    /// Milliseconds since the entry was added, from its stream id.
    pub(super) fn age_ms(&self) -> u64 {
        let added = self
            .entry_id
            .split('-')
            .next()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        now_ms().saturating_sub(added)
    }
}

#[derive(Debug)]
pub(super) enum Outcome {
    Completed(String),
    Dead {
        error: String,
        attempts: u32,
    },
    /// A bad entry (malformed, or its record unusable): dead letter only, no record.
    Parked {
        error: String,
        attempts: u32,
    },
    Cancelled,
    /// Acknowledge only: cancelled while queued, already final, or without a record.
    Skip,
}

impl Outcome {
    /// The finish script's kind and text.
    pub(super) fn kind(&self) -> (&'static str, &str, u32) {
        match self {
            Outcome::Completed(json) => ("c", json, 0),
            Outcome::Dead { error, attempts } => ("d", error, *attempts),
            Outcome::Parked { error, attempts } => ("p", error, *attempts),
            Outcome::Cancelled => ("x", "", 0),
            Outcome::Skip => ("s", "", 0),
        }
    }
}

#[derive(Debug)]
pub(super) struct Done {
    pub(super) entry: Entry,
    pub(super) outcome: Outcome,
}

#[derive(Debug)]
pub(super) enum FinMsg {
    Done(Done),
    /// Everything sent before has been flushed.
    Stop(oneshot::Sender<()>),
}

#[derive(Debug)]
pub(super) struct Live {
    pub(super) id: TaskId,
    pub(super) abort: AbortHandle,
}

/// A worker's series, looked up once: one family per measure, labeled
/// `queue="<name>"` so queues aggregate and compare (see the crate's "Metrics" section).
pub(super) struct Metrics {
    pub(super) wait: Arc<Histogram>,
    pub(super) run: Arc<Histogram>,
    pub(super) completed: Arc<Counter>,
    pub(super) failed: Arc<Counter>,
    pub(super) retried: Arc<Counter>,
    pub(super) dead: Arc<Counter>,
    pub(super) dead_trimmed: Arc<Counter>,
    /// Accepted and not yet finished, queue-wide (sampled from Redis).
    pub(super) pending: Arc<Gauge>,
    /// Waiting for a retry's backoff on this process's workers.
    pub(super) scheduled: Arc<Gauge>,
    /// Dead letters kept now, queue-wide (sampled from Redis).
    pub(super) dead_letters: Arc<Gauge>,
    /// Attempts running now on this process's workers.
    pub(super) running: Arc<Gauge>,
}

impl Metrics {
    /// The series of the queue `queue` in `m`, labeled `queue="<queue>"`. Workers of one
    /// queue in one process share them: the `running` and `scheduled` gauges add up
    /// their counts.
    pub(super) fn new(m: &cortex_metrics::Metrics, queue: &str) -> Self {
        let labels = [("queue", queue)];
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
        let gauge = |what: &str| {
            m.gauge_with(what, &labels)
                .unwrap_or_else(|_| m.gauge(what))
        };
        Self {
            wait: seconds("durable.wait"),
            run: seconds("durable.run"),
            completed: counter("durable.completed"),
            failed: counter("durable.failed"),
            retried: counter("durable.retried"),
            dead: counter("durable.dead"),
            dead_trimmed: counter("durable.dead_trimmed"),
            pending: gauge("durable.pending"),
            scheduled: gauge("durable.scheduled"),
            dead_letters: gauge("durable.dead_letters"),
            running: gauge("durable.running"),
        }
    }
}

/// One more on a gauge for as long as it lives: dropped however its scope ends (an
/// aborted task included), so the gauge never keeps a count that is gone.
pub(super) struct Level(Arc<Gauge>);

impl Level {
    pub(super) fn up(gauge: &Arc<Gauge>) -> Self {
        gauge.inc();
        Self(Arc::clone(gauge))
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) struct Shared {
    pub(super) queue: DurableQueue,
    pub(super) registry: Registry,
    pub(super) consumer: String,
    pub(super) sem: Arc<Semaphore>,
    /// Slots the main reader holds while it blocks on Redis for new entries: free for
    /// entries the worker reclaims, since the reader starts those as soon as it wakes.
    pub(super) reading: AtomicUsize,
    /// Every entry delivered to this worker and not yet acknowledged: its idle time is
    /// refreshed so that no other worker reclaims it.
    pub(super) held: Mutex<HashMap<Slot, TaskId>>,
    /// Held entries another worker reclaimed: no longer refreshed (they are that
    /// worker's now) and not started here if they have not started yet.
    pub(super) lost: Mutex<HashSet<Slot>>,
    /// Tasks started and not finished; whoever removes one decides its outcome.
    pub(super) live: Mutex<HashMap<Slot, Live>>,
    pub(super) live_changed: Notify,
    /// Signalled when the main reader finds work, to wake the helper reader.
    pub(super) active: Notify,
    pub(super) processed: AtomicU64,
    pub(super) fin_tx: mpsc::UnboundedSender<FinMsg>,
    /// Outcomes sent to the finisher and not yet recorded; past `max_unflushed` the
    /// readers take no new work, so a Redis that refuses writes does not make results
    /// pile up in memory.
    pub(super) unflushed: AtomicUsize,
    pub(super) max_unflushed: usize,
    pub(super) flushed: Notify,
    pub(super) reclaim_tx: mpsc::UnboundedSender<Vec<Entry>>,
    /// A call that delivers entries failed, so its reply (and entries now pending for
    /// this worker) may be lost: the maintenance task looks for them.
    pub(super) recover: Notify,
    pub(super) log: WarnLimiter,
    pub(super) trim_log: WarnLimiter,
    pub(super) metrics: Metrics,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent at every await-free step, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(super) fn config(&self) -> &crate::durable::DurableConfig {
        self.queue.config()
    }

    pub(super) fn send(&self, done: Done) {
        self.unflushed.fetch_add(1, Ordering::Relaxed);
        // The finisher outlives every sender except after a shutdown gave up on it; the
        // entry then stays pending and is reclaimed.
        let _ = self.fin_tx.send(FinMsg::Done(done));
    }

    /// Marks `entries` as held; returns those that were not held already (a reply
    /// that arrives after the worker recovered its entries must not start them twice).
    pub(super) fn hold(&self, entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
        let mut held = lock(&self.held);
        entries
            .into_iter()
            .filter(|e| held.insert(e.slot(), e.id).is_none())
            .collect()
    }

    /// Drops a live task whose entry another worker took (reclaimed, or finished): it
    /// is that worker's to run and record, so nothing is sent to the finisher (an
    /// acknowledgement here would end the other worker's run).
    pub(super) fn forget_live(&self, entry: &Entry) {
        let slot = entry.slot();
        if lock(&self.live).remove(&slot).is_some() {
            self.live_changed.notify_waiters();
        }
        // Lock order everywhere: `held`, then `lost`.
        let mut held = lock(&self.held);
        lock(&self.lost).remove(&slot);
        held.remove(&slot);
    }

    /// Ends a live task with `outcome`, unless a cancel or a shutdown already took it.
    pub(super) fn finish_live(&self, entry: Entry, outcome: Outcome) {
        if lock(&self.live).remove(&entry.slot()).is_none() {
            return;
        }
        self.live_changed.notify_waiters();
        self.send(Done { entry, outcome });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_keeps_its_raw_id_and_a_malformed_one_maps_to_zero() {
        let e = Entry::new(
            Priority::High,
            "17-3".into(),
            "ff".into(),
            "h".into(),
            "1".into(),
        );
        assert_eq!(
            (e.id, e.slot()),
            (TaskId::from_u64(255), (0, "17-3".to_owned()))
        );
        let bad = Entry::new(
            Priority::Low,
            "1-0".into(),
            "not-a-task".into(),
            "h".into(),
            "".into(),
        );
        assert_eq!(
            (bad.id, bad.raw_id.as_str()),
            (TaskId::from_u64(0), "not-a-task")
        );
        assert_eq!(bad.slot().0, 2);
    }

    #[test]
    fn start_tokens_name_the_consumer_the_entry_and_the_request() {
        let e = Entry::new(
            Priority::Normal,
            "5-1".into(),
            "1".into(),
            "h".into(),
            "".into(),
        );
        assert_eq!(e.token("host-1-ab", 0), "host-1-ab 5-1 0");
        assert_ne!(e.token("host-1-ab", 1), e.token("host-1-ab", 0));
    }

    #[test]
    fn age_comes_from_the_stream_id() {
        let ms = now_ms() - 5_000;
        let e = Entry::new(
            Priority::Normal,
            format!("{ms}-0"),
            "1".into(),
            "h".into(),
            "".into(),
        );
        assert!((5_000..60_000).contains(&e.age_ms()), "{}", e.age_ms());
        let odd = Entry::new(
            Priority::Normal,
            "x".into(),
            "1".into(),
            "h".into(),
            "".into(),
        );
        // An id without a time counts from the epoch: its age is the clock itself,
        // read between two readings (the clock may tick in between).
        let before = now_ms();
        let age = odd.age_ms();
        assert!((before..=now_ms()).contains(&age), "{age}");
    }

    #[test]
    fn outcomes_map_to_the_finish_scripts_kinds() {
        assert_eq!(Outcome::Completed("7".into()).kind(), ("c", "7", 0));
        assert_eq!(
            Outcome::Dead {
                error: "e".into(),
                attempts: 3
            }
            .kind(),
            ("d", "e", 3)
        );
        assert_eq!(
            Outcome::Parked {
                error: "p".into(),
                attempts: 1
            }
            .kind(),
            ("p", "p", 1)
        );
        assert_eq!(Outcome::Cancelled.kind(), ("x", "", 0));
        assert_eq!(Outcome::Skip.kind(), ("s", "", 0));
    }
}
