//! The in-process engine behind [`TaskQueue`](crate::TaskQueue),
//! [`PriorityQueue`](crate::PriorityQueue) and [`BackgroundTasks`](crate::BackgroundTasks).
//!
//! One design for all three: a fixed set of worker tasks pull jobs from one queue per
//! level under a short `std::sync::Mutex`; each level's bound is a semaphore, so
//! `enqueue` waits for room without spinning and `try_enqueue` fails at once. Workers
//! run a job's future inline (no `tokio::spawn` per task: that is what makes a
//! `JoinSet` slower), with the panic caught, the timeout applied and cancellation
//! checked on every poll.

use std::any::Any;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::index::Index;
use crate::room::Room;
use crate::{BoxError, Error, Priority, QueueStats, Result, TaskId, TaskInfo, TaskStatus};

/// A task's value, type-erased on its way from the worker to its handle. A `()` value
/// (the common case) boxes without allocating.
pub(crate) type AnyBox = Box<dyn Any + Send>;

/// What a queued task knows how to do. The task's future lives inside the same
/// allocation as the rest of its job (one `Box` per task, not one per layer).
pub(crate) trait Work: Send + 'static {
    /// Prepares the next attempt; `false` when none can run (a plain future runs once;
    /// a factory runs as often as asked).
    fn start(self: Pin<&mut Self>) -> bool;
    /// Polls the current attempt.
    fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<AnyBox, String>>;
    /// Drops the attempt; returns the value as JSON when the task asked for its result
    /// to be recorded.
    fn finish(self: Pin<&mut Self>, outcome: &Result<AnyBox>) -> Option<serde_json::Value>;
    /// Whether a failed attempt can be followed by another.
    fn retryable(&self) -> bool;
}

/// Records a value as JSON, or not.
pub(crate) type ToJson<T> = fn(&T) -> Option<serde_json::Value>;

/// Where a task's attempts come from.
pub(crate) trait Source<F>: Send + 'static {
    /// Whether a failed attempt can be followed by another.
    const RETRYABLE: bool;
    /// The next attempt's future, if there is one.
    fn next(&mut self) -> Option<F>;
}

/// A plain future: one attempt.
pub(crate) struct Once<F>(Option<F>);

impl<F: Send + 'static> Source<F> for Once<F> {
    const RETRYABLE: bool = false;

    fn next(&mut self) -> Option<F> {
        self.0.take()
    }
}

/// A function making a fresh future per attempt.
pub(crate) struct Factory<G>(G);

impl<G, F> Source<F> for Factory<G>
where
    G: FnMut() -> F + Send + 'static,
{
    const RETRYABLE: bool = true;

    fn next(&mut self) -> Option<F> {
        Some((self.0)())
    }
}

pin_project_lite::pin_project! {
    /// A task: where its attempts come from, the current one, how to record its value.
    pub(crate) struct Task<S, F, T> {
        source: S,
        #[pin]
        fut: Option<F>,
        json: ToJson<T>,
    }
}

fn recorded<T: 'static>(outcome: &Result<AnyBox>, json: ToJson<T>) -> Option<serde_json::Value> {
    outcome.as_ref().ok()?.downcast_ref::<T>().and_then(json)
}

/// For tasks whose value is not recorded.
pub(crate) fn no_json<T>(_: &T) -> Option<serde_json::Value> {
    None
}

/// For tasks whose value is recorded in [`TaskInfo::result`].
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

impl<S, F, T, E> Work for Task<S, F, T>
where
    S: Source<F>,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    fn start(self: Pin<&mut Self>) -> bool {
        let mut this = self.project();
        match this.source.next() {
            Some(fut) => {
                this.fut.set(Some(fut));
                true
            }
            None => false,
        }
    }

    fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<AnyBox, String>> {
        match self.project().fut.as_pin_mut() {
            None => Poll::Ready(Err("the task has no attempt to run".into())),
            Some(f) => f.poll(cx).map(|r| match r {
                Ok(v) => Ok(Box::new(v) as AnyBox),
                Err(e) => Err(e.into().to_string()),
            }),
        }
    }

    fn finish(self: Pin<&mut Self>, outcome: &Result<AnyBox>) -> Option<serde_json::Value> {
        let mut this = self.project();
        this.fut.set(None);
        recorded(outcome, *this.json)
    }

    fn retryable(&self) -> bool {
        S::RETRYABLE
    }
}

/// The boxed work of one task.
pub(crate) type BoxWork = Pin<Box<dyn Work>>;

/// The work of a plain future, run once.
pub(crate) fn once<F, T, E>(fut: F, json: ToJson<T>) -> BoxWork
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(Task {
        source: Once(Some(fut)),
        fut: None,
        json,
    })
}

/// The work of a factory, called once per attempt.
pub(crate) fn factory<G, F, T, E>(make: G, json: ToJson<T>) -> BoxWork
where
    G: FnMut() -> F + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(Task {
        source: Factory(make),
        fut: None,
        json,
    })
}

/// One attempt of a job's work, as a future.
struct Attempt<'a> {
    work: Pin<&'a mut dyn Work>,
}

impl Future for Attempt<'_> {
    type Output = Result<AnyBox, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.work.as_mut().poll_attempt(cx)
    }
}

/// Per-task options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) level: usize,
    pub(crate) priority: Option<Priority>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<Retry>,
}

/// Retries with exponential backoff: `attempts` in all, waiting `base`, `2 * base`,
/// `4 * base`, ... (at most `max_backoff`) between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt.
    pub base: Duration,
    /// Cap on any one wait.
    pub max_backoff: Duration,
}

impl Retry {
    /// `attempts` in all, waits doubling from `base`, capped at one minute.
    pub fn exponential(attempts: u32, base: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            base,
            max_backoff: Duration::from_secs(60),
        }
    }

    fn backoff(&self, failed_attempts: u32) -> Duration {
        let shift = failed_attempts.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << shift).min(self.max_backoff)
    }
}

/// The mutable part of a task's record.
#[derive(Debug)]
struct State {
    status: TaskStatus,
    started: Option<Instant>,
    finished: Option<Instant>,
    attempts: u32,
    error: Option<String>,
    result: Option<serde_json::Value>,
    /// The value or error, until the handle takes it (dropped at once when detached).
    outcome: Option<Result<AnyBox>>,
}

/// Everything known about one task; shared by the queue's index, its job and the
/// running worker.
#[derive(Debug)]
pub(crate) struct Record {
    id: TaskId,
    name: Cow<'static, str>,
    priority: Option<Priority>,
    queued: Instant,
    state: Mutex<State>,
    cancel: AtomicBool,
    /// Wakes the running attempt when the task is cancelled.
    run_waker: AtomicWaker,
    /// Wakes the handle when the task finishes.
    handle_waker: AtomicWaker,
    /// Set when the handle is dropped: nobody will take the outcome.
    detached: AtomicBool,
    /// Set once the task reached its final status.
    done: AtomicBool,
}

impl Record {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while this lock is held (only field writes), so a
        // poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(&self, clock: &Clock) -> TaskInfo {
        let s = self.lock();
        TaskInfo {
            id: self.id,
            name: self.name.to_string(),
            status: s.status,
            priority: self.priority,
            queued_at: clock.system(self.queued),
            started_at: s.started.map(|t| clock.system(t)),
            finished_at: s.finished.map(|t| clock.system(t)),
            attempts: s.attempts,
            error: s.error.clone(),
            result: s.result.clone(),
        }
    }
}

/// Maps `Instant`s (cheap, monotonic) to wall-clock times for snapshots.
#[derive(Debug)]
struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    fn system(&self, at: Instant) -> SystemTime {
        self.system + at.saturating_duration_since(self.instant)
    }
}

/// A queued job.
struct Job {
    record: Arc<Record>,
    work: BoxWork,
    opts: Options,
    /// Whether it took a unit of its level's bound (a retried job re-enters without
    /// one: it was accepted already).
    holds_room: bool,
}

impl Drop for Job {
    /// A job dropped without finishing (its runtime shut down under it) still tells
    /// its handle, which would otherwise wait forever.
    fn drop(&mut self) {
        if self.record.done.load(Ordering::Acquire) {
            return;
        }
        {
            let mut s = self.record.lock();
            s.status = TaskStatus::Cancelled;
            s.error = Some("the queue was dropped before the task finished".into());
            if !self.record.detached.load(Ordering::Acquire) {
                s.outcome = Some(Err(Error::Cancelled));
            }
        }
        self.record.handle_waker.wake();
    }
}

/// How workers choose among levels.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Always the highest non-empty level: high-priority work waits for nothing lower,
    /// and a steady flood of high work starves lower levels.
    Strict,
    /// Smooth weighted round robin over the non-empty levels (as nginx balances
    /// upstreams): with weights 5/3/2 and every level busy, each run of ten picks takes
    /// five high, three normal and two low tasks, so low work keeps moving under a
    /// flood while high work still goes first.
    Weighted(Vec<u32>),
}

/// The queues of every level, under one lock.
struct Sched {
    queues: Vec<VecDeque<Job>>,
    /// Every task's record, under the same lock as the queues: a producer takes one
    /// lock per task, not two.
    index: Index<Record>,
    weights: Vec<i64>,
    current: Vec<i64>,
    strict: bool,
}

impl Sched {
    fn pop(&mut self) -> Option<Job> {
        if self.strict || self.queues.len() == 1 {
            return self.queues.iter_mut().find_map(VecDeque::pop_front);
        }
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.queues.len() {
            if self.queues[i].is_empty() {
                continue;
            }
            self.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        self.queues[b].pop_front()
    }

    fn remove(&mut self, level: usize, id: TaskId) -> Option<Job> {
        let q = self.queues.get_mut(level)?;
        let at = q.iter().position(|j| j.record.id == id)?;
        q.remove(at)
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

/// Finished tasks a worker has not yet retired: (finishing time, id).
type Retired = Vec<(Instant, TaskId)>;

/// Jobs a worker may take from a long single-level queue beyond the one it runs.
const TAKE_AHEAD: usize = 15;

/// A task shorter than this lets its worker take jobs ahead.
const SHORT_TASK: Duration = Duration::from_micros(100);

/// Finished records a worker retires at once.
const RETIRE_BATCH: usize = 32;

/// Counters of one level. Producers write only `accepted`; each worker writes only its
/// own `served` slot (one more slot takes cancels and retries from elsewhere). Every
/// slot has its own cache line, so no line bounces between threads per task; gauges
/// (queued, live) are differences of these monotonic counts, summed when read.
struct LevelStats {
    accepted: Accepted,
    served: Box<[Served]>,
}

#[derive(Default)]
#[repr(align(128))]
struct Accepted {
    enqueued: AtomicU64,
}

#[derive(Default)]
#[repr(align(128))]
struct Served {
    /// Left the queue: taken by a worker, or removed by a cancel.
    taken: AtomicU64,
    /// Put back after a failed attempt's backoff.
    requeued: AtomicU64,
    /// Attempts running now (each slot adds and subtracts its own).
    running: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    retried: AtomicU64,
}

impl LevelStats {
    fn new(slots: usize) -> Self {
        Self {
            accepted: Accepted::default(),
            served: (0..slots).map(|_| Served::default()).collect(),
        }
    }

    fn sum(&self, field: impl Fn(&Served) -> &AtomicU64) -> u64 {
        self.served.iter().fold(0u64, |acc, s| {
            acc.wrapping_add(field(s).load(Ordering::SeqCst))
        })
    }

    fn queued(&self) -> u64 {
        let taken = self.sum(|s| &s.taken);
        let requeued = self.sum(|s| &s.requeued);
        let enqueued = self.accepted.enqueued.load(Ordering::SeqCst);
        (enqueued + requeued).saturating_sub(taken)
    }

    fn finished(&self) -> u64 {
        self.sum(|s| &s.completed) + self.sum(|s| &s.failed) + self.sum(|s| &s.cancelled)
    }
}

/// Queue depth is sampled at one enqueue in this many: reading it means reading the
/// workers' counters, a cache miss the producer need not pay every time.
const DEPTH_SAMPLE: u64 = 16;

/// Metric handles, looked up once.
struct Recorders {
    wait: Arc<cortex_metrics::Histogram>,
    run: Arc<cortex_metrics::Histogram>,
    depth: Arc<cortex_metrics::Histogram>,
    completed: Arc<cortex_metrics::Counter>,
    failed: Arc<cortex_metrics::Counter>,
    cancelled: Arc<cortex_metrics::Counter>,
    retried: Arc<cortex_metrics::Counter>,
}

impl Recorders {
    fn new(name: &str) -> Self {
        let m = cortex_metrics::global();
        Self {
            wait: m.histogram(&format!("tasks.{name}.wait")),
            run: m.histogram(&format!("tasks.{name}.run")),
            depth: m.histogram(&format!("tasks.{name}.depth")),
            completed: m.counter(&format!("tasks.{name}.completed")),
            failed: m.counter(&format!("tasks.{name}.failed")),
            cancelled: m.counter(&format!("tasks.{name}.cancelled")),
            retried: m.counter(&format!("tasks.{name}.retried")),
        }
    }
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
    pub(crate) metrics: bool,
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
    /// Signalled when the last live task finishes (for shutdown and `wait_idle`).
    idle: Notify,
    /// Callers inside `wait_idle`; finishing tasks check for idleness only when some.
    idle_waiters: AtomicUsize,
    closing: AtomicBool,
    stats: Vec<LevelStats>,
    recorders: Option<Recorders>,
    clock: Clock,
}

/// A task cancelled, panicked or failed: what the worker does next.
enum Ending {
    Done(Result<AnyBox>),
    Retry(String),
}

/// What a shutdown left undone.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks that finished (any final status) while the queue drained.
    pub drained: u64,
    /// Tasks that never started: cancelled when the deadline passed.
    pub not_started: Vec<TaskId>,
    /// Tasks that were running when the deadline passed, and were cancelled.
    pub aborted: Vec<TaskId>,
}

impl ShutdownReport {
    /// `true` when everything accepted ran to the end.
    pub fn is_complete(&self) -> bool {
        self.not_started.is_empty() && self.aborted.is_empty()
    }
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
        let (strict, weights) = match &config.policy {
            Policy::Strict => (true, vec![1; levels]),
            Policy::Weighted(w) => (false, w.iter().map(|&x| i64::from(x.max(1))).collect()),
        };
        let engine = Arc::new(Self {
            sched: Mutex::new(Sched {
                queues: (0..levels).map(|_| VecDeque::new()).collect(),
                index: Index::new(
                    config
                        .max_records
                        .saturating_add(config.capacity.saturating_mul(levels))
                        .saturating_add(config.workers),
                ),
                current: vec![0; levels],
                weights,
                strict,
            }),
            room: (0..levels).map(|_| Room::new(config.capacity)).collect(),
            work: Notify::new(),
            sleepers: AtomicUsize::new(0),
            idle: Notify::new(),
            idle_waiters: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stats: (0..levels)
                .map(|_| LevelStats::new(config.workers + 1))
                .collect(),
            recorders: config.metrics.then(|| Recorders::new(&config.name)),
            clock: Clock {
                instant: Instant::now(),
                system: SystemTime::now(),
            },
            config,
        });
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
        let mut sched = self.lock_sched();
        // Room may have been taken just before a close; checked under the lock the
        // exiting workers look under, so an accepted job always has a worker.
        if self.closing.load(Ordering::SeqCst) {
            drop(sched);
            self.room[opts.level].give();
            return Err(Error::ShutDown);
        }
        let record = sched.index.insert(|id| Record {
            id,
            name,
            priority: opts.priority,
            queued,
            state: Mutex::new(State {
                status: TaskStatus::Queued,
                started: None,
                finished: None,
                attempts: 0,
                error: None,
                result: None,
                outcome: None,
            }),
            cancel: AtomicBool::new(false),
            run_waker: AtomicWaker::new(),
            handle_waker: AtomicWaker::new(),
            detached: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        let job = Job {
            record: Arc::clone(&record),
            work,
            opts,
            holds_room: true,
        };
        let stats = &self.stats[opts.level];
        sched.queues[opts.level].push_back(job);
        let n = stats.accepted.enqueued.fetch_add(1, Ordering::SeqCst) + 1;
        drop(sched);
        self.wake_one();
        if n.is_multiple_of(DEPTH_SAMPLE)
            && let Some(r) = &self.recorders
        {
            r.depth.record(stats.queued());
        }
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

    /// The worker's next job: from its own few taken ahead, or from the queue (taking a
    /// few more ahead when `short`: its last task was short).
    fn pop(&self, ahead: &mut VecDeque<Job>, short: bool) -> Option<Job> {
        if let Some(job) = ahead.pop_front() {
            return Some(job);
        }
        let mut sched = self.lock_sched();
        let job = sched.pop()?;
        // With one level, a long queue and short tasks, take a few more while holding
        // the lock: the lock is what producer and workers contend on. Never with
        // priorities, where a task taken ahead would make a later high-priority one
        // wait; and a worker whose task turned out long gives back what it took ahead
        // once another worker is idle (`give_back`), so a long task holds up little.
        if let ([queue], true) = (sched.queues.as_mut_slice(), short) {
            let more = (queue.len() / (2 * self.config.workers)).min(TAKE_AHEAD);
            ahead.extend(queue.drain(..more));
        }
        if !sched.is_empty() {
            // More is waiting: pass the wake-up on so another idle worker takes it.
            self.wake_one();
        }
        Some(job)
    }

    async fn worker(self: Arc<Self>, slot: usize) {
        // When a worker goes straight from one task to the next, the first one's
        // finishing time is the next one's start: one clock read saved per task (a
        // clock read is a good part of a no-op task's cost).
        let mut last_finish: Option<Instant> = None;
        let mut retired = Retired::with_capacity(RETIRE_BATCH);
        let mut ahead = VecDeque::with_capacity(TAKE_AHEAD);
        let mut short = false;
        loop {
            // Registering as a waiter costs a lock inside `Notify`: only done when the
            // queue looked empty, and then the queue is checked again before sleeping
            // so a push in between is not missed.
            let job = match self.pop(&mut ahead, short) {
                Some(job) => job,
                None => {
                    // Nothing to do: retire what this worker finished before it sleeps.
                    if !retired.is_empty() {
                        self.retire(&mut retired);
                    }
                    let notified = self.work.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // Counted before the last look at the queue: a producer that pushes
                    // after that look sees the count and signals (`wake_one`).
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    let _awake = CountOut(&self.sleepers);
                    // Read before the last look at the queue: once closed, nothing new
                    // is put in (see `retry`), so an empty queue now stays empty.
                    let closing = self.closing.load(Ordering::SeqCst);
                    match self.pop(&mut ahead, false) {
                        Some(job) => job,
                        None if closing => return,
                        None => {
                            last_finish = None;
                            notified.await;
                            continue;
                        }
                    }
                }
            };
            self.release_room(&job);
            self.stats[job.opts.level].served[slot]
                .taken
                .fetch_add(1, Ordering::Relaxed);
            // The last task was long and a worker idles: what this one took ahead
            // would wait behind the next long task, so it goes back to the queue.
            if !short && !ahead.is_empty() && self.sleepers.load(Ordering::Relaxed) > 0 {
                self.give_back(&mut ahead);
            }
            let before = last_finish;
            last_finish = self.run(job, last_finish.take(), slot, &mut retired).await;
            short = matches!((before, last_finish), (Some(a), Some(b)) if b.saturating_duration_since(a) < SHORT_TASK);
        }
    }

    /// Wakes one sleeping worker, if any sleeps.
    fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.work.notify_one();
        }
    }

    /// The counter slot of everything that is not a worker (cancels, retry timers).
    fn shared_slot(&self) -> usize {
        self.config.workers
    }

    fn release_room(&self, job: &Job) {
        if job.holds_room {
            self.room[job.opts.level].give();
        }
    }

    /// Returns jobs taken ahead to the front of the queue, for an idle worker.
    fn give_back(&self, ahead: &mut VecDeque<Job>) {
        let mut sched = self.lock_sched();
        if let [queue] = sched.queues.as_mut_slice() {
            while let Some(job) = ahead.pop_back() {
                queue.push_front(job);
            }
        }
        drop(sched);
        self.wake_one();
    }

    /// Marks the record running, unless it was cancelled while it waited; returns the
    /// attempt number and its start.
    fn begin(&self, record: &Record, now: Option<Instant>) -> Option<(u32, Instant)> {
        let mut s = record.lock();
        if record.cancel.load(Ordering::Acquire) || s.status == TaskStatus::Cancelled {
            return None;
        }
        s.status = TaskStatus::Running;
        s.attempts += 1;
        let now = now.unwrap_or_else(Instant::now);
        if s.started.is_none()
            && let Some(r) = &self.recorders
        {
            r.wait
                .record_duration(now.saturating_duration_since(record.queued));
        }
        s.started = Some(now);
        Some((s.attempts, now))
    }

    /// Runs one attempt; returns when it finished, if the task did.
    async fn run(
        self: &Arc<Self>,
        mut job: Job,
        now: Option<Instant>,
        slot: usize,
        retired: &mut Retired,
    ) -> Option<Instant> {
        let level = job.opts.level;
        let Some((attempts, started)) = self.begin(&job.record, now) else {
            return Some(self.finish(job, Err(Error::Cancelled), None, slot, Some(retired)));
        };
        if !job.work.as_mut().start() {
            // Only a plain future can be out of attempts, and it is never retried.
            let used = Error::Failed("the task's future was already used".into());
            return Some(self.finish(job, Err(used), None, slot, Some(retired)));
        }
        self.stats[level].served[slot]
            .running
            .fetch_add(1, Ordering::Relaxed);
        let retry = job.opts.retry.filter(|_| job.work.retryable());
        let attempt = Attempt {
            work: job.work.as_mut(),
        };
        let ending = self
            .attempt(&job.record, attempt, job.opts.timeout, retry, attempts)
            .await;
        self.stats[level].served[slot]
            .running
            .fetch_sub(1, Ordering::Relaxed);
        match ending {
            Ending::Done(outcome) => {
                Some(self.finish(job, outcome, Some(started), slot, Some(retired)))
            }
            Ending::Retry(error) => {
                if let Some(r) = &self.recorders {
                    r.run.record_duration(started.elapsed());
                }
                self.retry(job, attempts, error, slot);
                None
            }
        }
    }

    async fn attempt(
        &self,
        record: &Record,
        attempt: Attempt<'_>,
        timeout: Option<Duration>,
        retry: Option<Retry>,
        attempts: u32,
    ) -> Ending {
        let guarded = Cancellable {
            record,
            inner: AssertUnwindSafe(attempt).catch_unwind(),
        };
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, guarded)
                .await
                .map_err(|_| Error::TimedOut(limit)),
            None => Ok(guarded.await),
        };
        let failure = match outcome {
            Ok(None) => return Ending::Done(Err(Error::Cancelled)),
            Ok(Some(Ok(Ok(value)))) => return Ending::Done(Ok(value)),
            Ok(Some(Ok(Err(text)))) => Error::Failed(text),
            Ok(Some(Err(panic))) => Error::Panicked(panic_message(&*panic)),
            Err(e) => e,
        };
        match retry {
            Some(r) if attempts < r.attempts && !self.closing.load(Ordering::Acquire) => {
                Ending::Retry(failure.to_string())
            }
            _ => Ending::Done(Err(failure)),
        }
    }

    /// Puts a failed attempt back after its backoff. The task was accepted, so it goes
    /// back without waiting for room: accepted work is never dropped for lack of it.
    fn retry(self: &Arc<Self>, job: Job, attempts: u32, error: String, slot: usize) {
        {
            let mut s = job.record.lock();
            s.status = TaskStatus::Retrying;
            s.error = Some(error);
        }
        self.stats[job.opts.level].served[slot]
            .retried
            .fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.recorders {
            r.retried.increment();
        }
        let backoff = job
            .opts
            .retry
            .map_or(Duration::ZERO, |r| r.backoff(attempts));
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            // A cancel (or shutdown) ends the wait at once.
            let waited = Cancellable {
                record: &job.record,
                inner: Box::pin(tokio::time::sleep(backoff)),
            }
            .await;
            let level = job.opts.level;
            let slot = engine.shared_slot();
            let mut sched = engine.lock_sched();
            // Checked under the queue's lock: a worker that saw the queue closed and
            // then found it empty under the same lock never misses a job put back here.
            if waited.is_none() || engine.closing.load(Ordering::SeqCst) {
                drop(sched);
                engine.finish(job, Err(Error::Cancelled), None, slot, None);
                return;
            }
            engine.stats[level].served[slot]
                .requeued
                .fetch_add(1, Ordering::Relaxed);
            let mut job = job;
            job.holds_room = false;
            sched.queues[level].push_back(job);
            drop(sched);
            engine.wake_one();
        });
    }

    /// Records the final outcome; returns the finishing time.
    fn finish(
        &self,
        mut job: Job,
        outcome: Result<AnyBox>,
        started: Option<Instant>,
        slot: usize,
        retired: Option<&mut Retired>,
    ) -> Instant {
        let level = job.opts.level;
        let stats = &self.stats[level].served[slot];
        let (status, error) = match &outcome {
            Ok(_) => (TaskStatus::Completed, None),
            Err(Error::Cancelled) => (TaskStatus::Cancelled, None),
            Err(e) => (TaskStatus::Failed, Some(e.to_string())),
        };
        let counter = match status {
            TaskStatus::Completed => &stats.completed,
            TaskStatus::Cancelled => &stats.cancelled,
            _ => &stats.failed,
        };
        if let Some(r) = &self.recorders {
            match status {
                TaskStatus::Completed => r.completed.increment(),
                TaskStatus::Cancelled => r.cancelled.increment(),
                _ => r.failed.increment(),
            }
        }
        let json = job.work.as_mut().finish(&outcome);
        let record = &job.record;
        let now = Instant::now();
        if let (Some(r), Some(t)) = (&self.recorders, started) {
            r.run.record_duration(now.saturating_duration_since(t));
        }
        {
            let mut s = record.lock();
            s.status = status;
            s.finished = Some(now);
            if error.is_some() {
                s.error = error;
            }
            s.result = json;
            if !record.detached.load(Ordering::Acquire) {
                s.outcome = Some(outcome);
            }
        }
        record.done.store(true, Ordering::Release);
        record.handle_waker.wake();
        match retired {
            // A worker retires its finished records in batches: one lock of the index
            // per batch instead of one per task.
            Some(batch) => {
                batch.push((now, record.id));
                if batch.len() >= RETIRE_BATCH {
                    self.retire(batch);
                }
            }
            None => self.retire(&mut vec![(now, record.id)]),
        }
        counter.fetch_add(1, Ordering::SeqCst);
        // Only a waiter (shutdown, `wait_idle`) needs to know the queue went idle.
        if self.idle_waiters.load(Ordering::SeqCst) > 0 && self.live() == 0 {
            self.idle.notify_waiters();
        }
        now
    }

    /// Keeps finished records for `retention`, and at most `max_records` of them
    /// (plus at most a batch per worker not yet retired). Empties `batch`.
    fn retire(&self, batch: &mut Retired) {
        let (max, retention) = (self.config.max_records, self.config.retention);
        let mut sched = self.lock_sched();
        let index = &mut sched.index;
        for (now, id) in batch.drain(..) {
            index.retire(id, now, max, retention);
        }
    }

    /// Drops finished records older than `age` now (the original's hourly cleanup, on
    /// demand). Returns how many went.
    pub(crate) fn clear_finished(&self, age: Duration) -> usize {
        self.lock_sched().index.expire(Instant::now(), age)
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<TaskInfo> {
        let record = self.lock_sched().index.get(id).cloned()?;
        Some(record.info(&self.clock))
    }

    /// Every known task, oldest first.
    pub(crate) fn list(&self, filter: impl Fn(TaskStatus) -> bool) -> Vec<TaskInfo> {
        let all = self.lock_sched().index.all();
        let mut infos: Vec<TaskInfo> = all
            .iter()
            .map(|r| r.info(&self.clock))
            .filter(|i| filter(i.status))
            .collect();
        infos.sort_by_key(|i| i.id);
        infos
    }

    /// Cancels a task: a queued one is taken out of its queue at once; a running one
    /// stops at its next await.
    pub(crate) fn cancel(&self, id: TaskId) -> Result<()> {
        let record = self
            .lock_sched()
            .index
            .get(id)
            .cloned()
            .ok_or(Error::UnknownTask(id))?;
        {
            let s = record.lock();
            if s.status.is_finished() {
                return Err(Error::AlreadyFinished(id));
            }
        }
        record.cancel.store(true, Ordering::Release);
        let level = record
            .priority
            .map_or(0, Priority::index)
            .min(self.stats.len() - 1);
        let removed = self.lock_sched().remove(level, id);
        match removed {
            Some(job) => {
                self.release_room(&job);
                let slot = self.shared_slot();
                self.stats[level].served[slot]
                    .taken
                    .fetch_add(1, Ordering::Relaxed);
                self.finish(job, Err(Error::Cancelled), None, slot, None);
            }
            None => record.run_waker.wake(),
        }
        Ok(())
    }

    /// Cancels every live task; returns how many were asked to stop.
    pub(crate) fn cancel_all(&self) -> usize {
        self.list(|s| !s.is_finished())
            .into_iter()
            .filter(|i| self.cancel(i.id).is_ok())
            .count()
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

    /// Waits until no task is live, or `limit` passes (then `false`).
    pub(crate) async fn wait_idle(&self, limit: Duration) -> bool {
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _leave = CountOut(&self.idle_waiters);
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.live() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Stops intake at once and closes the queue for good.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for room in &self.room {
            room.close();
        }
        self.work.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops intake, lets workers drain until `deadline`, then cancels what is left
    /// and reports it.
    pub(crate) async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let before = self.stats(None).finished();
        self.close();
        let mut report = ShutdownReport::default();
        if !self.wait_idle(deadline).await {
            for info in self.list(|s| !s.is_finished()) {
                if self.cancel(info.id).is_ok() {
                    match info.status {
                        TaskStatus::Running => report.aborted.push(info.id),
                        _ => report.not_started.push(info.id),
                    }
                }
            }
            // A cancelled attempt stops at its next await; give them a moment to
            // record it, bounded so shutdown never hangs on a task that never yields.
            self.wait_idle(Duration::from_millis(500)).await;
        }
        let after = self.stats(None).finished();
        report.drained = after
            .saturating_sub(before)
            .saturating_sub((report.not_started.len() + report.aborted.len()) as u64);
        report
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

/// Resolves to `None` as soon as the record is cancelled, else to the inner output.
struct Cancellable<'a, F> {
    record: &'a Record,
    inner: F,
}

impl<F: Future + Unpin> Future for Cancellable<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.record.cancel.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        self.record.run_waker.register(cx.waker());
        // Checked again after registering, so a cancel between the two is not missed.
        if self.record.cancel.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll(cx).map(Some)
    }
}

/// The text of a panic payload (`&str` or `String`, as `panic!` makes them).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// A handle to one task's outcome: await it for the value, or drop it to detach (the
/// task still runs and its record still tells its outcome).
#[must_use = "a dropped handle detaches the task; keep it to learn its outcome"]
pub struct TaskHandle<T> {
    record: Arc<Record>,
    _value: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.record.id)
            .finish()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(record: Arc<Record>) -> Self {
        Self {
            record,
            _value: std::marker::PhantomData,
        }
    }

    /// The task's id, for status queries and cancellation.
    pub fn id(&self) -> TaskId {
        self.record.id
    }

    /// Lets the task run on without anyone awaiting its value (dropping the handle
    /// does the same); returns its id.
    pub fn detach(self) -> TaskId {
        self.record.id
    }
}

impl<T: 'static> Future for TaskHandle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.record.handle_waker.register(cx.waker());
        let mut s = self.record.lock();
        match s.outcome.take() {
            Some(outcome) => Poll::Ready(outcome.and_then(|value| {
                value
                    .downcast::<T>()
                    .map(|v| *v)
                    .map_err(|_| Error::Failed("task value of an unexpected type".into()))
            })),
            // Finished and already taken: a handle polled after it was ready.
            None if s.status.is_finished() => Poll::Ready(Err(Error::Cancelled)),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        self.record.detached.store(true, Ordering::Release);
        // Frees a value that finished before the handle went.
        self.record.lock().outcome.take();
    }
}
