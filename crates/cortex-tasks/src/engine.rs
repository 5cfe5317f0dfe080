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
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::{BoxError, Error, Priority, QueueStats, Result, TaskId, TaskInfo, TaskStatus};

/// A task's value, type-erased on its way from the worker to its handle. A `()` value
/// (the common case) boxes without allocating.
pub(crate) type AnyBox = Box<dyn Any + Send>;
/// One attempt of a task.
pub(crate) type AttemptFuture = Pin<Box<dyn Future<Output = Result<AnyBox, String>> + Send>>;

/// What a queued task knows how to do.
pub(crate) trait Work: Send + 'static {
    /// Starts the next attempt, or `None` when the task cannot run again (a plain
    /// future runs once; a factory runs as often as asked).
    fn attempt(&mut self) -> Option<AttemptFuture>;
    /// Hands the final outcome to the task's handle; returns the value as JSON when the
    /// task asked for its result to be recorded.
    fn finish(self: Box<Self>, outcome: Result<AnyBox>) -> Option<serde_json::Value>;
    /// Whether a failed attempt can be followed by another.
    fn retryable(&self) -> bool;
}

/// A plain future, run once.
pub(crate) struct Once<F, T> {
    fut: Option<F>,
    tx: oneshot::Sender<Result<T>>,
    json: fn(&T) -> Option<serde_json::Value>,
}

/// A function that makes a fresh future for each attempt.
pub(crate) struct Factory<G, T> {
    make: G,
    tx: oneshot::Sender<Result<T>>,
    json: fn(&T) -> Option<serde_json::Value>,
}

fn boxed_attempt<F, T, E>(fut: F) -> AttemptFuture
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    Box::pin(async move {
        match fut.await {
            Ok(v) => Ok(Box::new(v) as AnyBox),
            Err(e) => Err(e.into().to_string()),
        }
    })
}

fn deliver<T: 'static>(
    tx: oneshot::Sender<Result<T>>,
    outcome: Result<AnyBox>,
    json: fn(&T) -> Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let typed = outcome.and_then(|b| {
        b.downcast::<T>()
            .map(|v| *v)
            .map_err(|_| Error::Failed("task value of an unexpected type".into()))
    });
    let recorded = typed.as_ref().ok().and_then(json);
    // The handle may be gone (detached): the outcome stays in the record regardless.
    let _ = tx.send(typed);
    recorded
}

/// For tasks whose value is not recorded.
pub(crate) fn no_json<T>(_: &T) -> Option<serde_json::Value> {
    None
}

/// For tasks whose value is recorded in [`TaskInfo::result`].
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

impl<F, T, E> Work for Once<F, T>
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    fn attempt(&mut self) -> Option<AttemptFuture> {
        self.fut.take().map(boxed_attempt)
    }

    fn finish(self: Box<Self>, outcome: Result<AnyBox>) -> Option<serde_json::Value> {
        deliver(self.tx, outcome, self.json)
    }

    fn retryable(&self) -> bool {
        false
    }
}

impl<G, F, T, E> Work for Factory<G, T>
where
    G: FnMut() -> F + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    fn attempt(&mut self) -> Option<AttemptFuture> {
        Some(boxed_attempt((self.make)()))
    }

    fn finish(self: Box<Self>, outcome: Result<AnyBox>) -> Option<serde_json::Value> {
        deliver(self.tx, outcome, self.json)
    }

    fn retryable(&self) -> bool {
        true
    }
}

/// Builds the work and the handle's receiving end for a plain future.
pub(crate) fn once<F, T, E>(
    fut: F,
    json: fn(&T) -> Option<serde_json::Value>,
) -> (Box<dyn Work>, oneshot::Receiver<Result<T>>)
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    let (tx, rx) = oneshot::channel();
    let work = Once {
        fut: Some(fut),
        tx,
        json,
    };
    (Box::new(work), rx)
}

/// Builds the work and the handle's receiving end for a retryable factory.
pub(crate) fn factory<G, F, T, E>(
    make: G,
    json: fn(&T) -> Option<serde_json::Value>,
) -> (Box<dyn Work>, oneshot::Receiver<Result<T>>)
where
    G: FnMut() -> F + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    let (tx, rx) = oneshot::channel();
    (Box::new(Factory { make, tx, json }), rx)
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
}

/// Everything known about one task; shared by the queue's index, its job and the
/// running worker.
#[derive(Debug)]
pub(crate) struct Record {
    id: TaskId,
    name: Box<str>,
    priority: Option<Priority>,
    queued: Instant,
    state: Mutex<State>,
    cancel: AtomicBool,
    /// Wakes the running attempt when the task is cancelled.
    run_waker: AtomicWaker,
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
    work: Box<dyn Work>,
    opts: Options,
    /// Whether it took a unit of its level's bound (a retried job re-enters without
    /// one: it was accepted already).
    holds_room: bool,
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

/// Counters of one level.
#[derive(Default)]
struct LevelStats {
    queued: AtomicU64,
    enqueued: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    retried: AtomicU64,
    running: AtomicU64,
}

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

const SHARDS: usize = 16;
type Index = HashMap<TaskId, Arc<Record>, foldhash::fast::RandomState>;

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
    room: Vec<Semaphore>,
    work: Notify,
    /// Signalled when the last live task finishes (for shutdown and `wait_idle`).
    idle: Notify,
    live: AtomicU64,
    closing: AtomicBool,
    next_id: AtomicU64,
    index: Vec<Mutex<Index>>,
    /// Finished tasks in finishing order, for expiry by age and by count.
    finished: Mutex<VecDeque<(Instant, TaskId)>>,
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
            reason: "a task queue starts its workers on the current Tokio runtime; none is running".into(),
        })?;
        let levels = config.levels.max(1);
        let (strict, weights) = match &config.policy {
            Policy::Strict => (true, vec![1; levels]),
            Policy::Weighted(w) => (false, w.iter().map(|&x| i64::from(x.max(1))).collect()),
        };
        let engine = Arc::new(Self {
            sched: Mutex::new(Sched {
                queues: (0..levels).map(|_| VecDeque::new()).collect(),
                current: vec![0; levels],
                weights,
                strict,
            }),
            room: (0..levels).map(|_| Semaphore::new(config.capacity)).collect(),
            work: Notify::new(),
            idle: Notify::new(),
            live: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            index: (0..SHARDS).map(|_| Mutex::default()).collect(),
            finished: Mutex::new(VecDeque::new()),
            stats: (0..levels).map(|_| LevelStats::default()).collect(),
            recorders: config.metrics.then(|| Recorders::new(&config.name)),
            clock: Clock {
                instant: Instant::now(),
                system: SystemTime::now(),
            },
            config,
        });
        for _ in 0..engine.config.workers {
            handle.spawn(Arc::clone(&engine).worker());
        }
        handle.spawn(sweep(Arc::downgrade(&engine)));
        Ok(engine)
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn shard(&self, id: TaskId) -> MutexGuard<'_, Index> {
        let i = (id.as_u64() as usize) % SHARDS;
        self.index[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a job once room was secured for it (the permit is already taken).
    fn accept(&self, name: &str, work: Box<dyn Work>, opts: Options) -> TaskId {
        let id = TaskId::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed));
        let record = Arc::new(Record {
            id,
            name: name.into(),
            priority: opts.priority,
            queued: Instant::now(),
            state: Mutex::new(State {
                status: TaskStatus::Queued,
                started: None,
                finished: None,
                attempts: 0,
                error: None,
                result: None,
            }),
            cancel: AtomicBool::new(false),
            run_waker: AtomicWaker::new(),
        });
        self.shard(id).insert(id, Arc::clone(&record));
        self.live.fetch_add(1, Ordering::AcqRel);
        let stats = &self.stats[opts.level];
        stats.enqueued.fetch_add(1, Ordering::Relaxed);
        let depth = stats.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(r) = &self.recorders {
            r.depth.record(depth);
        }
        self.lock_sched().queues[opts.level].push_back(Job {
            record,
            work,
            opts,
            holds_room: true,
        });
        self.work.notify_one();
        id
    }

    /// Waits (bounded) for room, then accepts.
    pub(crate) async fn enqueue(&self, name: &str, work: Box<dyn Work>, opts: Options) -> Result<TaskId> {
        let room = &self.room[opts.level];
        let waited = self.config.enqueue_timeout;
        match tokio::time::timeout(waited, room.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            Ok(Err(_)) => return Err(Error::ShutDown),
            Err(_) => return Err(Error::EnqueueTimeout { waited }),
        }
        Ok(self.accept(name, work, opts))
    }

    /// Accepts at once or fails with [`Error::QueueFull`].
    pub(crate) fn try_enqueue(&self, name: &str, work: Box<dyn Work>, opts: Options) -> Result<TaskId> {
        match self.room[opts.level].try_acquire() {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::ShutDown),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return Err(Error::QueueFull {
                    capacity: self.config.capacity,
                });
            }
        }
        Ok(self.accept(name, work, opts))
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let job = {
                let mut sched = self.lock_sched();
                let job = sched.pop();
                if job.is_some() && !sched.is_empty() {
                    // More is waiting: pass the wake-up on so another idle worker takes it.
                    self.work.notify_one();
                }
                job
            };
            match job {
                Some(job) => {
                    self.release_room(&job);
                    self.stats[job.opts.level].queued.fetch_sub(1, Ordering::Relaxed);
                    self.run(job).await;
                }
                None if self.closing.load(Ordering::Acquire) => return,
                None => notified.await,
            }
        }
    }

    fn release_room(&self, job: &Job) {
        if job.holds_room {
            self.room[job.opts.level].add_permits(1);
        }
    }

    /// Marks the record running, unless it was cancelled while it waited.
    fn begin(&self, record: &Record) -> Option<u32> {
        let mut s = record.lock();
        if record.cancel.load(Ordering::Acquire) || s.status == TaskStatus::Cancelled {
            return None;
        }
        s.status = TaskStatus::Running;
        s.attempts += 1;
        let now = Instant::now();
        if s.started.is_none()
            && let Some(r) = &self.recorders
        {
            r.wait.record_duration(now.saturating_duration_since(record.queued));
        }
        s.started = Some(now);
        Some(s.attempts)
    }

    async fn run(self: &Arc<Self>, mut job: Job) {
        let level = job.opts.level;
        let Some(attempts) = self.begin(&job.record) else {
            self.finish(job, Err(Error::Cancelled));
            return;
        };
        let Some(fut) = job.work.attempt() else {
            // Only a plain future can be out of attempts, and it is never retried.
            self.finish(job, Err(Error::Failed("the task's future was already used".into())));
            return;
        };
        self.stats[level].running.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let retry = job.opts.retry.filter(|_| job.work.retryable());
        let ending = self.attempt(&job.record, fut, job.opts.timeout, retry, attempts).await;
        self.stats[level].running.fetch_sub(1, Ordering::Relaxed);
        if let Some(r) = &self.recorders {
            r.run.record_duration(started.elapsed());
        }
        match ending {
            Ending::Done(outcome) => self.finish(job, outcome),
            Ending::Retry(error) => self.retry(job, attempts, error),
        }
    }

    async fn attempt(
        &self,
        record: &Record,
        fut: AttemptFuture,
        timeout: Option<Duration>,
        retry: Option<Retry>,
        attempts: u32,
    ) -> Ending {
        let guarded = Cancellable {
            record,
            inner: AssertUnwindSafe(fut).catch_unwind(),
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
    fn retry(self: &Arc<Self>, job: Job, attempts: u32, error: String) {
        {
            let mut s = job.record.lock();
            s.status = TaskStatus::Retrying;
            s.error = Some(error);
        }
        self.stats[job.opts.level].retried.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.recorders {
            r.retried.increment();
        }
        let backoff = job.opts.retry.map_or(Duration::ZERO, |r| r.backoff(attempts));
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let level = job.opts.level;
            engine.stats[level].queued.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                holds_room: false,
                ..job
            };
            engine.lock_sched().queues[level].push_back(job);
            engine.work.notify_one();
        });
    }

    fn finish(&self, job: Job, outcome: Result<AnyBox>) {
        let level = job.opts.level;
        let stats = &self.stats[level];
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
        let record = job.record;
        let json = job.work.finish(outcome);
        let now = Instant::now();
        {
            let mut s = record.lock();
            s.status = status;
            s.finished = Some(now);
            if error.is_some() {
                s.error = error;
            }
            s.result = json;
        }
        counter.fetch_add(1, Ordering::Release);
        self.retire(record.id, now);
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Keeps finished records for `retention`, and at most `max_records` of them.
    fn retire(&self, id: TaskId, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut fin = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            fin.push_back((now, id));
            while let Some(&(at, old)) = fin.front() {
                let too_many = fin.len() > self.config.max_records;
                if too_many || now.saturating_duration_since(at) >= self.config.retention {
                    fin.pop_front();
                    expired.push(old);
                } else {
                    break;
                }
            }
        }
        for old in expired {
            self.shard(old).remove(&old);
        }
    }

    /// Drops finished records older than `age` now (the original's hourly cleanup, on
    /// demand). Returns how many went.
    pub(crate) fn clear_finished(&self, age: Duration) -> usize {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut fin = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(&(at, old)) = fin.front() {
                if now.saturating_duration_since(at) >= age {
                    fin.pop_front();
                    expired.push(old);
                } else {
                    break;
                }
            }
        }
        for old in &expired {
            self.shard(*old).remove(old);
        }
        expired.len()
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<TaskInfo> {
        let record = self.shard(id).get(&id).cloned()?;
        Some(record.info(&self.clock))
    }

    /// Every known task, oldest first.
    pub(crate) fn list(&self, filter: impl Fn(TaskStatus) -> bool) -> Vec<TaskInfo> {
        let mut all: Vec<Arc<Record>> = Vec::new();
        for shard in &self.index {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(shard.values().cloned());
        }
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
        let record = self.shard(id).get(&id).cloned().ok_or(Error::UnknownTask(id))?;
        {
            let s = record.lock();
            if s.status.is_finished() {
                return Err(Error::AlreadyFinished(id));
            }
        }
        record.cancel.store(true, Ordering::Release);
        let level = record.priority.map_or(0, Priority::index).min(self.stats.len() - 1);
        let removed = self.lock_sched().remove(level, id);
        match removed {
            Some(job) => {
                self.release_room(&job);
                self.stats[level].queued.fetch_sub(1, Ordering::Relaxed);
                self.finish(job, Err(Error::Cancelled));
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
        for s in levels {
            out.queued += s.queued.load(Ordering::Relaxed);
            out.running += s.running.load(Ordering::Relaxed);
            out.enqueued += s.enqueued.load(Ordering::Relaxed);
            out.completed += s.completed.load(Ordering::Acquire);
            out.failed += s.failed.load(Ordering::Acquire);
            out.cancelled += s.cancelled.load(Ordering::Acquire);
            out.retried += s.retried.load(Ordering::Relaxed);
        }
        out
    }

    /// Tasks accepted and not yet finished.
    pub(crate) fn live(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until no task is live, or `limit` passes (then `false`).
    pub(crate) async fn wait_idle(&self, limit: Duration) -> bool {
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
        self.closing.store(true, Ordering::Release);
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
#[derive(Debug)]
#[must_use = "a dropped handle detaches the task; keep it to learn its outcome"]
pub struct TaskHandle<T> {
    id: TaskId,
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(id: TaskId, rx: oneshot::Receiver<Result<T>>) -> Self {
        Self { id, rx }
    }

    /// The task's id, for status queries and cancellation.
    pub fn id(&self) -> TaskId {
        self.id
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Cancelled)))
    }
}
