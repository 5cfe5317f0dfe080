//! The in-process engine behind [`TaskQueue`](crate::TaskQueue),
//! [`PriorityQueue`](crate::PriorityQueue) and [`BackgroundTasks`](crate::BackgroundTasks).
//!
//! One design for all three: a fixed set of worker tasks pull jobs from one queue per
//! level under a short `std::sync::Mutex`; each level's bound is a semaphore, so
//! `enqueue` waits for room without spinning and `try_enqueue` fails at once. Workers
//! run a job's future inline (no `tokio::spawn` per task: that is what makes a
//! `JoinSet` slower), with the panic caught, the timeout applied and cancellation
//! checked on every poll.
//!
//! The parts: [`work`] (a task's attempts), [`record`] (its record and job),
//! [`sched`] (levels and policies), [`run`] (the worker loop), [`finish`] (retry or
//! final status), [`control`] (lookups, cancel, shutdown), [`stats`] (counters and
//! metrics), [`handle`] (what callers hold), [`retry`] (backoff).

mod control;
mod finish;
mod handle;
mod record;
mod retry;
mod run;
mod sched;
mod stats;
mod work;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use self::record::{Clock, Job, Record};
use self::sched::{Picker, Sched};
use self::stats::{LevelStats, Recorders};
use self::work::BoxWork;
use crate::index::Index;
use crate::room::Room;
use crate::{Error, Priority, Result};

pub use self::handle::{DrainReport, TaskHandle};
pub use self::retry::Retry;
pub use self::sched::Policy;
pub(crate) use self::work::{factory, no_json, once, to_json};

/// Per-task options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) level: usize,
    pub(crate) priority: Option<Priority>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<Retry>,
}

#[cfg(test)]
impl Options {
    /// Level 0, no priority, timeout or retries.
    pub(crate) const NONE: Self = Self {
        level: 0,
        priority: None,
        timeout: None,
        retry: None,
    };
}

/// Engine settings, filled in by each public queue type from its own config.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) name: String,
    pub(crate) workers: usize,
    pub(crate) capacity: usize,
    pub(crate) levels: usize,
    pub(crate) policy: Policy,
    pub(crate) enqueue_timeout: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_records: usize,
    /// Where the queue's series go, if anywhere.
    pub(crate) metrics: Option<cortex_metrics::Metrics>,
}

/// The shared state of one queue.
pub(crate) struct Engine {
    config: EngineConfig,
    sched: Mutex<Sched>,
    /// One bound per level; closed at shutdown so waiting producers return.
    room: Vec<Room>,
    work: Notify,
    /// Workers about to sleep or asleep on `work`. Producers signal `work` only when
    /// some are: with every worker busy, a push touches no shared wake-up state.
    sleepers: AtomicUsize,
    /// A wake-up is on its way to a sleeping worker: until that worker looks at the
    /// queue, producers do not wake another (one enqueue after another would otherwise
    /// wake every sleeper, each for a queue the first one empties). The woken worker
    /// clears it, then looks; finding more than it takes, it wakes the next.
    waking: AtomicBool,
    /// Signalled when the last live task finishes (for shutdown and `wait_idle`).
    idle: Notify,
    /// Callers inside `wait_idle`; finishing tasks check for idleness only when some.
    idle_waiters: AtomicUsize,
    closing: AtomicBool,
    stats: Vec<LevelStats>,
    recorders: Option<Recorders>,
    clock: Clock,
}

impl Engine {
    pub(crate) fn start(config: EngineConfig) -> Result<Arc<Self>> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfig {
            key: "runtime",
            value: String::new(),
            reason: "a task queue starts its workers on the current Tokio runtime; none is running"
                .into(),
        })?;
        let levels = config.levels.max(1);
        let engine = Arc::new(Self {
            sched: Mutex::new(Sched {
                queues: (0..levels).map(|_| VecDeque::new()).collect(),
                index: Index::new(
                    config
                        .max_records
                        .saturating_add(config.capacity.saturating_mul(levels))
                        .saturating_add(config.workers),
                ),
                picker: Picker::new(&config.policy, levels),
            }),
            room: (0..levels).map(|_| Room::new(config.capacity)).collect(),
            work: Notify::new(),
            sleepers: AtomicUsize::new(0),
            waking: AtomicBool::new(false),
            idle: Notify::new(),
            idle_waiters: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stats: (0..levels)
                .map(|_| LevelStats::new(config.workers + 1))
                .collect(),
            recorders: config
                .metrics
                .as_ref()
                .map(|m| Recorders::new(m, &config.name)),
            clock: Clock {
                instant: Instant::now(),
                system: SystemTime::now(),
            },
            config,
        });
        if let Some(m) = &engine.config.metrics {
            engine.register_gauges(m);
        }
        for slot in 0..engine.config.workers {
            handle.spawn(Arc::clone(&engine).worker(slot));
        }
        handle.spawn(sweep(Arc::downgrade(&engine)));
        Ok(engine)
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn lock_sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a job once room was secured for it (the permit is already taken).
    fn accept(&self, name: Cow<'static, str>, work: BoxWork, opts: Options) -> Result<Arc<Record>> {
        let queued = Instant::now();
        // Read before the lock, and only when debug spans can be on: off, it costs
        // a level check.
        let cause = if tracing::level_enabled!(tracing::Level::DEBUG) {
            Some(Box::new(tracing::Span::current()))
        } else {
            None
        };
        let mut sched = self.lock_sched();
        // Room may have been taken just before a close; checked under the lock the
        // exiting workers look under, so an accepted job always has a worker.
        if self.closing.load(Ordering::SeqCst) {
            drop(sched);
            self.room[opts.level].give();
            return Err(Error::ShutDown);
        }
        let record = sched.index.insert(|id| Record::new(id, name, opts, queued));
        let job = Job {
            record: Arc::clone(&record),
            work,
            holds_room: true,
            cause,
        };
        sched.queues[opts.level].push_back(job);
        // Producers write this count only under the queue's lock, one at a time: a
        // plain store does, without a locked instruction per task.
        stats::own_add(&self.stats[opts.level].accepted.enqueued, 1);
        drop(sched);
        self.wake_one();
        Ok(record)
    }

    /// Waits (bounded) for room, then accepts.
    pub(crate) async fn enqueue(
        &self,
        name: Cow<'static, str>,
        work: BoxWork,
        opts: Options,
    ) -> Result<Arc<Record>> {
        self.room[opts.level]
            .take(self.config.enqueue_timeout)
            .await?;
        self.accept(name, work, opts)
    }

    /// Accepts at once or fails with [`Error::QueueFull`].
    pub(crate) fn try_enqueue(
        &self,
        name: Cow<'static, str>,
        work: BoxWork,
        opts: Options,
    ) -> Result<Arc<Record>> {
        self.room[opts.level].try_take()?;
        self.accept(name, work, opts)
    }
}

/// Counts a waiter (of `wait_idle`, or a worker going to sleep) out however its wait ends.
struct CountOut<'a>(&'a AtomicUsize);

impl Drop for CountOut<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Expires finished records on an idle queue too (finishing tasks expire them as they
/// go); ends when the queue is gone or closed.
async fn sweep(engine: std::sync::Weak<Engine>) {
    let period = match engine.upgrade() {
        Some(e) => (e.config.retention / 12).max(Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(e) = engine.upgrade() else { return };
        if e.is_closed() && e.live() == 0 {
            return;
        }
        e.clear_finished(e.config.retention);
    }
}
