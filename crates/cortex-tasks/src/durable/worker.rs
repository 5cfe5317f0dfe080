use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cortex_metrics::{Counter, Histogram};
use futures_util::FutureExt;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply, StreamReadReply,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use super::queue::DurableQueue;
use super::redis_util::{
    LogLimiter, bounded, is_nogroup, later, ms, now_ms, random_u64, redis_backoff,
};
use super::registry::{AttemptError, Handler, Registry};
use crate::{Error, Priority, Result, TaskId};

/// Where a delivered entry lives: its stream (by priority index) and its entry id.
type Slot = (usize, String);

/// Most outcomes one finish script records.
const FINISH_BATCH: usize = 1024;

/// Most `XAUTOCLAIM` calls per stream per reclaim tick: each scans at most ten times
/// `batch` pending entries, and the cursor carries the scan over to the next tick.
const RECLAIM_CALLS: usize = 16;

/// One delivered stream entry.
#[derive(Debug)]
struct Entry {
    prio: Priority,
    entry_id: String,
    id: TaskId,
    /// The entry's `id` field as written: the scripts check it, so that a foreign or
    /// damaged entry is parked rather than taken for another task.
    raw_id: String,
    handler: String,
    payload: String,
}

impl Entry {
    fn slot(&self) -> Slot {
        (self.prio.index(), self.entry_id.clone())
    }

    fn new(
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
        }
    }

    fn parse(prio: Priority, e: StreamId) -> Self {
        let field = |k: &str| e.get::<String>(k).unwrap_or_default();
        let (raw_id, handler, payload) = (field("id"), field("handler"), field("payload"));
        Self::new(prio, e.id, raw_id, handler, payload)
    }

    /// The name of the start request number `seq` of this delivery (see the start
    /// script): the same name twice starts one attempt.
    fn token(&self, consumer: &str, seq: u32) -> String {
        format!("{consumer} {} {seq}", self.entry_id)
    }

    /// Milliseconds since the entry was added, from its stream id.
    fn age_ms(&self) -> u64 {
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
enum Outcome {
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
    fn kind(&self) -> (&'static str, &str, u32) {
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
struct Done {
    entry: Entry,
    outcome: Outcome,
}

#[derive(Debug)]
enum FinMsg {
    Done(Done),
    /// Everything sent before has been flushed.
    Stop(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Live {
    id: TaskId,
    abort: AbortHandle,
}

struct Metrics {
    wait: Arc<Histogram>,
    run: Arc<Histogram>,
    completed: Arc<Counter>,
    failed: Arc<Counter>,
    retried: Arc<Counter>,
    dead: Arc<Counter>,
    dead_trimmed: Arc<Counter>,
}

impl Metrics {
    /// The series of the queue `queue` in `m`: `tasks.durable.<queue>.*`.
    fn new(m: &cortex_metrics::Metrics, queue: &str) -> Self {
        let name = |what: &str| format!("tasks.durable.{queue}.{what}");
        Self {
            wait: m.histogram(&name("wait")),
            run: m.histogram(&name("run")),
            completed: m.counter(&name("completed")),
            failed: m.counter(&name("failed")),
            retried: m.counter(&name("retried")),
            dead: m.counter(&name("dead")),
            dead_trimmed: m.counter(&name("dead_trimmed")),
        }
    }
}

struct Shared {
    queue: DurableQueue,
    registry: Registry,
    consumer: String,
    sem: Arc<Semaphore>,
    /// Every entry delivered to this worker and not yet acknowledged: its idle time is
    /// refreshed so that no other worker reclaims it.
    held: Mutex<HashMap<Slot, TaskId>>,
    /// Held entries another worker reclaimed: no longer refreshed (they are that
    /// worker's now) and not started here if they have not started yet.
    lost: Mutex<HashSet<Slot>>,
    /// Tasks started and not finished; whoever removes one decides its outcome.
    live: Mutex<HashMap<Slot, Live>>,
    live_changed: Notify,
    /// Signalled when the main reader finds work, to wake the helper reader.
    active: Notify,
    processed: AtomicU64,
    fin_tx: mpsc::UnboundedSender<FinMsg>,
    /// Outcomes sent to the finisher and not yet recorded; past `max_unflushed` the
    /// readers take no new work, so a Redis that refuses writes does not make results
    /// pile up in memory.
    unflushed: AtomicUsize,
    max_unflushed: usize,
    flushed: Notify,
    reclaim_tx: mpsc::UnboundedSender<Vec<Entry>>,
    /// A call that delivers entries failed, so its reply (and entries now pending for
    /// this worker) may be lost: the maintenance task looks for them.
    recover: Notify,
    log: LogLimiter,
    trim_log: LogLimiter,
    metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent at every await-free step, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn config(&self) -> &super::DurableConfig {
        self.queue.config()
    }

    fn send(&self, done: Done) {
        self.unflushed.fetch_add(1, Ordering::Relaxed);
        // The finisher outlives every sender except after a shutdown gave up on it; the
        // entry then stays pending and is reclaimed.
        let _ = self.fin_tx.send(FinMsg::Done(done));
    }

    /// Marks `entries` as held; returns those that were not held already (a reply
    /// that arrives after the worker recovered its entries must not start them twice).
    fn hold(&self, entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
        let mut held = lock(&self.held);
        entries
            .into_iter()
            .filter(|e| held.insert(e.slot(), e.id).is_none())
            .collect()
    }

    /// Ends a live task with `outcome`, unless a cancel or a shutdown already took it.
    fn finish_live(&self, entry: Entry, outcome: Outcome) {
        if lock(&self.live).remove(&entry.slot()).is_none() {
            return;
        }
        self.live_changed.notify_waiters();
        self.send(Done { entry, outcome });
    }
}

/// A worker: reads tasks of one queue and runs them with the handlers of a [`Registry`].
///
/// It records into [`cortex_metrics::global()`] (or the registry given to
/// [`metrics`](Self::metrics)) as `tasks.durable.<queue name>.*`: `wait` and `run`
/// histograms (ms), and `completed`, `failed`, `retried`, `dead`, `dead_trimmed`
/// counters, so two queues in one process keep their series apart.
pub struct Worker {
    queue: DurableQueue,
    registry: Registry,
    consumer: String,
    metrics: cortex_metrics::Metrics,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("registry", &self.registry)
            .finish()
    }
}

impl Worker {
    /// A worker for `queue` running the handlers of `registry`.
    ///
    /// Its consumer name, `{hostname}-{pid}-{random hex}`, is unique, so a restarted
    /// process never inherits the pending entries of its previous life (they are
    /// reclaimed like those of any dead worker).
    pub fn new(queue: DurableQueue, registry: Registry) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let consumer = format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            random_u64() & 0xffff_ffff
        );
        Self {
            queue,
            registry,
            consumer,
            metrics: cortex_metrics::global().clone(),
        }
    }

    /// Records into `metrics` instead of [`cortex_metrics::global()`].
    pub fn metrics(mut self, metrics: &cortex_metrics::Metrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(self) -> WorkerHandle {
        let (fin_tx, fin_rx) = mpsc::unbounded_channel();
        let (reclaim_tx, reclaim_rx) = mpsc::unbounded_channel();
        let (stop_reading, stop_reading_rx) = watch::channel(false);
        let (stop_all, stop_all_rx) = watch::channel(false);
        // `DurableQueue::connect` validated the config: at most MAX_CONCURRENCY permits.
        let concurrency = self.queue.config().concurrency;
        let metrics = Metrics::new(&self.metrics, &self.queue.config().name);
        let shared = Arc::new(Shared {
            queue: self.queue,
            registry: self.registry,
            consumer: self.consumer,
            sem: Arc::new(Semaphore::new(concurrency)),
            held: Mutex::new(HashMap::new()),
            lost: Mutex::new(HashSet::new()),
            live: Mutex::new(HashMap::new()),
            live_changed: Notify::new(),
            active: Notify::new(),
            processed: AtomicU64::new(0),
            fin_tx,
            unflushed: AtomicUsize::new(0),
            max_unflushed: concurrency.saturating_mul(2).max(4 * FINISH_BATCH),
            flushed: Notify::new(),
            reclaim_tx,
            recover: Notify::new(),
            log: LogLimiter::new(Duration::from_secs(5)),
            trim_log: LogLimiter::new(Duration::from_secs(60)),
            metrics,
        });
        let readers = vec![
            tokio::spawn(reader(shared.clone(), stop_reading_rx.clone(), reclaim_rx)),
            tokio::spawn(helper(shared.clone(), stop_reading_rx.clone())),
        ];
        let finisher = tokio::spawn(finisher(shared.clone(), fin_rx));
        let maintenance = tokio::spawn(maintenance(shared.clone(), stop_reading_rx, stop_all_rx));
        WorkerHandle {
            shared,
            readers,
            finisher,
            maintenance,
            stop_reading,
            stop_all,
        }
    }
}

/// A snapshot of one worker ([`WorkerHandle::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The queue it reads.
    pub queue: String,
    /// Its consumer name in the group.
    pub consumer: String,
    /// Tasks it runs at once at most.
    pub concurrency: usize,
    /// Tasks running now.
    pub running: usize,
    /// Entries delivered to it and not yet acknowledged: running, waiting to start,
    /// waiting to retry, or finished and waiting to be recorded.
    pub held: usize,
    /// Outcomes waiting to be recorded in Redis (past a bound the worker takes no new
    /// work until Redis accepts them).
    pub unflushed: usize,
    /// Tasks it brought to a final status ([`WorkerHandle::processed`]).
    pub processed: u64,
}

/// What a graceful shutdown did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks running when the shutdown began that finished before the deadline.
    pub finished_in_time: u64,
    /// Tasks still running at the deadline: aborted, left pending in Redis and made
    /// reclaimable at once, so another worker runs them.
    pub aborted: Vec<TaskId>,
}

/// A running worker.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    finisher: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    stop_reading: watch::Sender<bool>,
    stop_all: watch::Sender<bool>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("consumer", &self.shared.consumer)
            .field("processed", &self.processed())
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Tasks this worker brought to a final status (completed, failed or cancelled).
    ///
    /// A local count: when the reply to a batch of outcomes was lost and the copy sent
    /// again found them recorded already, they are not counted here (the queue's
    /// [`stats`](super::DurableQueue::stats), kept in Redis, count every task once).
    pub fn processed(&self) -> u64 {
        self.shared.processed.load(Ordering::Relaxed)
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    /// What this worker holds and has done, in this process (the queue's
    /// [`stats`](super::DurableQueue::stats) count across every worker).
    pub fn stats(&self) -> WorkerStats {
        let shared = &self.shared;
        let concurrency = shared.config().concurrency;
        WorkerStats {
            queue: shared.config().name.clone(),
            consumer: shared.consumer.clone(),
            concurrency,
            running: lock(&shared.live).len(),
            held: lock(&shared.held).len(),
            unflushed: shared.unflushed.load(Ordering::Relaxed),
            processed: self.processed(),
        }
    }

    /// Stops reading new tasks, lets running ones finish until `deadline`, then aborts
    /// the rest.
    ///
    /// Aborted tasks, and tasks read but not started, stay pending in Redis: they are
    /// marked reclaimable at once, so another worker runs them; the aborted attempt does
    /// not count towards `max_attempts`. Nothing accepted is lost.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let until = later(Instant::now(), deadline);
        let shared = self.shared;
        let _ = self.stop_reading.send(true);
        for mut reader in self.readers {
            if tokio::time::timeout_at(until, &mut reader).await.is_err() {
                reader.abort();
            }
        }

        let running = lock(&shared.live).len() as u64;
        loop {
            let notified = shared.live_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&shared.live).is_empty() {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(until) => break,
            }
        }
        let aborted: Vec<(Slot, TaskId)> = lock(&shared.live)
            .drain()
            .map(|(slot, live)| {
                live.abort.abort();
                (slot, live.id)
            })
            .collect();
        shared.live_changed.notify_waiters();

        // Flush the acknowledgements of everything that finished, bounded: with Redis
        // down they stay pending and are reclaimed, which only repeats finished work.
        let (tx, rx) = oneshot::channel();
        let _ = shared.fin_tx.send(FinMsg::Stop(tx));
        let mut finisher = self.finisher;
        let flush_by = later(until.max(Instant::now()), shared.config().op_timeout);
        if tokio::time::timeout_at(flush_by, rx).await.is_err() {
            finisher.abort();
        }
        let _ = tokio::time::timeout_at(flush_by, &mut finisher).await;

        if let Err(e) = release(&shared, &aborted).await {
            tracing::warn!(error = %e, "durable tasks: could not release tasks at shutdown; they are reclaimed after the visibility timeout");
        }
        let _ = self.stop_all.send(true);
        let mut maintenance = self.maintenance;
        if tokio::time::timeout(shared.config().op_timeout, &mut maintenance)
            .await
            .is_err()
        {
            maintenance.abort();
        }
        let mut conn = shared.queue.conn();
        let _ = bounded(
            shared.config().op_timeout,
            "ZREM",
            redis::cmd("ZREM")
                .arg(&shared.queue.keys().workers)
                .arg(&shared.consumer)
                .query_async::<()>(&mut conn),
        )
        .await;
        ShutdownReport {
            finished_in_time: running.saturating_sub(aborted.len() as u64),
            aborted: aborted.into_iter().map(|(_, id)| id).collect(),
        }
    }
}

/// Makes every entry this worker still holds reclaimable at once, and uncounts the
/// attempts it aborted.
async fn release(shared: &Shared, aborted: &[(Slot, TaskId)]) -> Result<()> {
    let held: Vec<Slot> = {
        let mut held = lock(&shared.held);
        let lost = std::mem::take(&mut *lock(&shared.lost));
        held.drain()
            .map(|(slot, _)| slot)
            .filter(|s| !lost.contains(s))
            .collect()
    };
    if held.is_empty() {
        return Ok(());
    }
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    if !aborted.is_empty() {
        let mut inv = shared.queue.inner.scripts.release.arg(&keys.task_prefix);
        for (_, id) in aborted {
            inv.arg(id.to_string());
        }
        bounded(cfg.op_timeout, "release", inv.invoke_async::<()>(&mut conn)).await?;
    }
    // Only entries still this worker's: one another worker reclaimed stays with it.
    refresh(shared, &held, ms(cfg.visibility_timeout), None)
        .await
        .map(drop)
}

/// Resets the idle time of `slots` to `idle_ms`, for those still pending for this
/// worker, and records the heartbeat if given; returns the slots another worker took.
async fn refresh(
    shared: &Shared,
    slots: &[Slot],
    idle_ms: u64,
    heartbeat: Option<u64>,
) -> Result<Vec<Slot>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut inv = shared.queue.inner.scripts.refresh.prepare_invoke();
    for s in &keys.streams {
        inv.key(s);
    }
    inv.key(&keys.workers)
        .arg(&cfg.group)
        .arg(&shared.consumer)
        .arg(idle_ms)
        .arg(heartbeat.map(|h| h.to_string()).unwrap_or_default());
    for (prio, entry_id) in slots {
        inv.arg(prio).arg(entry_id);
    }
    let mut conn = shared.queue.conn();
    let lost: Vec<(usize, String)> =
        bounded(cfg.op_timeout, "refresh", inv.invoke_async(&mut conn)).await?;
    Ok(lost)
}

/// A start script's verdict on one entry: code, attempts, error (see `try_start`).
type Verdict = (i64, u32, String);

/// Reads and starts up to `count` new entries in one round trip.
async fn take(shared: &Shared, count: usize) -> Result<Vec<(Entry, Verdict)>> {
    type Row = (usize, String, String, String, String, i64, u32, String);
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut inv = shared.queue.inner.scripts.take.prepare_invoke();
    for s in &keys.streams {
        inv.key(s);
    }
    inv.arg(&cfg.group)
        .arg(&shared.consumer)
        .arg(count)
        .arg(&keys.task_prefix)
        .arg(now_ms())
        .arg(cfg.max_attempts)
        .arg(&keys.stats)
        .arg(ms(cfg.result_ttl));
    let mut conn = shared.queue.conn();
    let rows: Vec<Row> = bounded(cfg.op_timeout, "take", inv.invoke_async(&mut conn))
        .await
        .inspect_err(|_| shared.recover.notify_one())?;
    Ok(rows
        .into_iter()
        .map(
            |(s, entry_id, id, handler, payload, code, attempts, error)| {
                let entry = Entry::new(Priority::ALL[s.min(2)], entry_id, id, handler, payload);
                (entry, (code, attempts, error))
            },
        )
        .collect())
}

/// Starts the entries `take` read and this worker did not hold yet.
fn dispatch_taken(
    shared: &Arc<Shared>,
    taken: Vec<(Entry, Verdict)>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    let fresh: Vec<bool> = {
        let mut held = lock(&shared.held);
        taken
            .iter()
            .map(|(e, _)| held.insert(e.slot(), e.id).is_none())
            .collect()
    };
    for ((e, v), fresh) in taken.into_iter().zip(fresh) {
        if fresh {
            dispatch(shared, e, v, permits);
        }
    }
}

/// Waits for at least one free slot, then takes up to `batch`; `None` once the worker
/// stops.
async fn free_slots(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    batch: usize,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        biased;
        _ = stop.changed() => return None,
        p = shared.sem.clone().acquire_owned() => p.ok()?,
    };
    // Results waiting for Redis to record them: take no more work until they are.
    loop {
        let flushed = shared.flushed.notified();
        tokio::pin!(flushed);
        flushed.as_mut().enable();
        if shared.unflushed.load(Ordering::Relaxed) < shared.max_unflushed {
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return None,
            () = flushed => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let mut permits = vec![first];
    while permits.len() < batch {
        match shared.sem.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Runs the start script for `batch` as start request `seq` of each entry's delivery,
/// returning the verdict per entry. Sending the same batch and `seq` again after an
/// error starts nothing twice.
async fn start(shared: &Shared, batch: &[Entry], seq: u32) -> Result<Vec<Verdict>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut inv = shared.queue.inner.scripts.start.arg(&keys.task_prefix);
    inv.arg(now_ms())
        .arg(cfg.max_attempts)
        .arg(&keys.stats)
        .arg(ms(cfg.result_ttl));
    for e in batch {
        inv.arg(&e.raw_id).arg(e.token(&shared.consumer, seq));
    }
    let mut conn = shared.queue.conn();
    let codes: Vec<Verdict> = bounded(cfg.op_timeout, "start", inv.invoke_async(&mut conn)).await?;
    if codes.len() != batch.len() {
        return Err(Error::Failed(
            "start script returned a short reply".to_owned(),
        ));
    }
    Ok(codes)
}

async fn reader(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut reclaimed: mpsc::UnboundedReceiver<Vec<Entry>>,
) {
    let cfg = shared.config().clone();
    let mut conn = match shared.queue.blocking_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "durable tasks: cannot create the read connection; worker stops reading");
            return;
        }
    };
    let mut backlog: [VecDeque<Entry>; 3] = Default::default();
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        while let Ok(entries) = reclaimed.try_recv() {
            for e in entries {
                backlog[e.prio.index()].push_back(e);
            }
        }
        let Some(mut permits) = free_slots(&shared, &mut stop, cfg.batch).await else {
            return;
        };
        if backlog.iter().all(VecDeque::is_empty) {
            // Under load one round trip reads and starts a batch; only when nothing is
            // waiting does the worker block on its own connection.
            match take(&shared, permits.len()).await {
                Ok(taken) if !taken.is_empty() => {
                    failures = 0;
                    dispatch_taken(&shared, taken, &mut permits);
                    shared.active.notify_waiters();
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    drop(permits);
                    recover(&shared, &e, "taking tasks", &mut stop, failures).await;
                    continue;
                }
            }
            match read(&shared, &mut conn, permits.len()).await {
                Ok(entries) => {
                    failures = 0;
                    if !entries.is_empty() {
                        shared.active.notify_waiters();
                    }
                    for e in shared.hold(entries) {
                        backlog[e.prio.index()].push_back(e);
                    }
                }
                Err(e) => {
                    failures += 1;
                    drop(permits);
                    recover(&shared, &e, "reading tasks", &mut stop, failures).await;
                    continue;
                }
            }
            if *stop.borrow() {
                // Read but not started: released at shutdown for another worker.
                return;
            }
        }
        // COUNT applies per stream, so a read may return more than there are free
        // slots; the rest waits here (held and refreshed) and goes first next time.
        let mut batch = Vec::with_capacity(permits.len());
        {
            // Lock order everywhere: `held`, then `lost`.
            let mut held = lock(&shared.held);
            let mut lost = lock(&shared.lost);
            for q in &mut backlog {
                while batch.len() < permits.len() {
                    match q.pop_front() {
                        // Another worker reclaimed it while it waited here: it is
                        // that worker's to run.
                        Some(e) if lost.remove(&e.slot()) => {
                            held.remove(&e.slot());
                        }
                        Some(e) => batch.push(e),
                        None => break,
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        match start(&shared, &batch, 0).await {
            Ok(verdicts) => {
                failures = 0;
                for (e, v) in batch.into_iter().zip(verdicts) {
                    dispatch(&shared, e, v, &mut permits);
                }
            }
            Err(e) => {
                failures += 1;
                shared.log.warn("starting tasks", &e);
                // Sent again as the same start requests: an attempt the lost reply
                // already started is not counted twice.
                for e in batch.into_iter().rev() {
                    backlog[e.prio.index()].push_front(e);
                }
                drop(permits);
                pause(&mut stop, redis_backoff(failures)).await;
            }
        }
    }
}

/// A second reader. Under load the main reader spends most of its time waiting for its
/// round trip, so the helper keeps a second `take` in flight. It never blocks on Redis
/// (the worker has one blocking connection): when nothing is waiting it sleeps until
/// the main reader finds work again.
async fn helper(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cfg = shared.config().clone();
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(mut permits) = free_slots(&shared, &mut stop, cfg.batch).await else {
            return;
        };
        let active = shared.active.notified();
        tokio::pin!(active);
        active.as_mut().enable();
        match take(&shared, permits.len()).await {
            Ok(taken) if !taken.is_empty() => {
                failures = 0;
                dispatch_taken(&shared, taken, &mut permits);
            }
            Ok(_) => {
                drop(permits);
                tokio::select! {
                    _ = stop.changed() => return,
                    () = active => {}
                    () = tokio::time::sleep(cfg.block) => {}
                }
            }
            Err(e) => {
                failures += 1;
                if !is_nogroup(&e) {
                    shared.log.warn("taking tasks", &e);
                }
                drop(permits);
                pause(&mut stop, redis_backoff(failures)).await;
            }
        }
    }
}

/// After a failed read: recreates the consumer group if Redis lost it (a restart
/// without persistence), else logs (rate-limited); then backs off.
async fn recover(
    shared: &Shared,
    e: &Error,
    what: &str,
    stop: &mut watch::Receiver<bool>,
    failures: u32,
) {
    if is_nogroup(e) {
        if let Err(e) = shared.queue.ensure_groups().await {
            shared.log.warn("creating the consumer group", &e);
        }
    } else {
        shared.log.warn(what, e);
    }
    pause(stop, redis_backoff(failures)).await;
}

async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// Acts on the start script's verdict for one entry.
fn dispatch(
    shared: &Arc<Shared>,
    e: Entry,
    (code, attempts, error): Verdict,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    match code {
        1 => {
            if attempts == 1 {
                shared
                    .metrics
                    .wait
                    .record_duration(Duration::from_millis(e.age_ms()));
            }
            let slot = e.slot();
            // Insert under the lock held across the spawn, so the task cannot finish
            // before it is registered.
            let mut live = lock(&shared.live);
            if live.contains_key(&slot) {
                // Already running here (its entry came back, e.g. reclaimed from this
                // very worker): that run finishes it.
                return;
            }
            let Some(permit) = permits.pop() else {
                // Cannot happen: the batch is never larger than the permits taken.
                drop(live);
                shared.send(Done {
                    entry: e,
                    outcome: Outcome::Skip,
                });
                return;
            };
            let id = e.id;
            let handle = tokio::spawn(run_task(shared.clone(), e, attempts, permit));
            live.insert(
                slot,
                Live {
                    id,
                    abort: handle.abort_handle(),
                },
            );
        }
        4 => shared.send(Done {
            outcome: Outcome::Dead {
                error: format!("abandoned: its worker was lost during attempt {attempts}"),
                attempts,
            },
            entry: e,
        }),
        5 => {
            tracing::warn!(entry = %e.entry_id, error = %error, "durable tasks: parking a bad entry in the dead-letter stream");
            shared.send(Done {
                outcome: Outcome::Parked { error, attempts },
                entry: e,
            });
        }
        _ => shared.send(Done {
            entry: e,
            outcome: Outcome::Skip,
        }),
    }
}

async fn read(shared: &Shared, conn: &mut ConnectionManager, count: usize) -> Result<Vec<Entry>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&cfg.group)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(ms(cfg.block))
        .arg("STREAMS")
        .arg(&keys.streams)
        .arg(">")
        .arg(">")
        .arg(">");
    let reply: Option<StreamReadReply> = bounded(
        cfg.block + cfg.op_timeout,
        "XREADGROUP",
        cmd.query_async(conn),
    )
    .await
    .inspect_err(|_| shared.recover.notify_one())?;
    let mut out = Vec::new();
    for sk in reply.map(|r| r.keys).unwrap_or_default() {
        let Some(prio) = priority_of(shared, &sk.key) else {
            continue;
        };
        out.extend(sk.ids.into_iter().map(|e| Entry::parse(prio, e)));
    }
    Ok(out)
}

fn priority_of(shared: &Shared, key: &str) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|p| shared.queue.keys().stream(*p) == key)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

async fn attempt(
    handler: &Handler,
    payload: &str,
    timeout: Option<Duration>,
) -> std::result::Result<String, AttemptError> {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(payload))) {
        Ok(f) => AssertUnwindSafe(f).catch_unwind(),
        Err(p) => {
            return Err(AttemptError::Retryable(format!(
                "panicked: {}",
                panic_message(p.as_ref())
            )));
        }
    };
    let out = match timeout {
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => return Err(AttemptError::Retryable(format!("timed out after {d:?}"))),
        },
        None => fut.await,
    };
    out.unwrap_or_else(|p| {
        Err(AttemptError::Retryable(format!(
            "panicked: {}",
            panic_message(p.as_ref())
        )))
    })
}

fn retry_delay(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(Duration::from_secs(300))
}

async fn run_task(shared: Arc<Shared>, e: Entry, mut attempts: u32, permit: OwnedSemaphorePermit) {
    let cfg = shared.config();
    let mut permit = Some(permit);
    let mut seq = 0;
    let handler = shared.registry.get(&e.handler).cloned();
    let outcome = loop {
        let Some(h) = &handler else {
            break Outcome::Dead {
                error: Error::UnknownHandler(e.handler.clone()).to_string(),
                attempts,
            };
        };
        let t0 = Instant::now();
        let r = attempt(h, &e.payload, cfg.task_timeout).await;
        shared.metrics.run.record_duration(t0.elapsed());
        let error = match r {
            Ok(json) => break Outcome::Completed(json),
            Err(AttemptError::Permanent(error)) => break Outcome::Dead { error, attempts },
            Err(AttemptError::Retryable(error)) if attempts >= cfg.max_attempts => {
                break Outcome::Dead { error, attempts };
            }
            Err(AttemptError::Retryable(error)) => error,
        };
        shared.metrics.retried.increment();
        mark_retrying(&shared, e.id, &error).await;
        // The entry stays pending (and refreshed) through the backoff, so a crash here
        // loses nothing; the slot is free meanwhile.
        drop(permit.take());
        tokio::time::sleep(retry_delay(cfg.retry_backoff, attempts)).await;
        match shared.sem.clone().acquire_owned().await {
            Ok(p) => permit = Some(p),
            Err(_) => return,
        }
        // Each retry is a new start request; the same one is sent again after an error.
        seq += 1;
        let mut failures = 0;
        let verdict = loop {
            match start(&shared, std::slice::from_ref(&e), seq).await {
                Ok(verdicts) => break verdicts.into_iter().next(),
                Err(err) => {
                    failures += 1;
                    shared.log.warn("starting a retry", &err);
                    tokio::time::sleep(redis_backoff(failures)).await;
                }
            }
        };
        match verdict {
            Some((1, a, _)) => attempts = a,
            Some((4, a, _)) => break Outcome::Dead { error, attempts: a },
            Some((5, a, error)) => break Outcome::Parked { error, attempts: a },
            _ => break Outcome::Skip,
        }
    };
    drop(permit);
    shared.finish_live(e, outcome);
}

async fn mark_retrying(shared: &Shared, id: TaskId, error: &str) {
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    let r = bounded(
        shared.config().op_timeout,
        "retry",
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(keys.task(id))
            .arg("status")
            .arg("retrying")
            .arg("error")
            .arg(error)
            .ignore()
            .cmd("HINCRBY")
            .arg(&keys.stats)
            .arg("retried")
            .arg(1)
            .ignore()
            .query_async::<()>(&mut conn),
    )
    .await;
    if let Err(e) = r {
        shared.log.warn("recording a retry", &e);
    }
}

async fn finisher(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<FinMsg>) {
    let mut batch = Vec::new();
    loop {
        let mut stop = None;
        match rx.recv().await {
            Some(FinMsg::Done(d)) => batch.push(d),
            Some(FinMsg::Stop(ack)) => stop = Some(ack),
            None => return,
        }
        // Whatever finished while the previous flush was in flight goes out in one
        // round trip: the acknowledgements batch themselves under load.
        while stop.is_none() && batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                Ok(FinMsg::Done(d)) => batch.push(d),
                Ok(FinMsg::Stop(ack)) => stop = Some(ack),
                Err(_) => break,
            }
        }
        // The finish script is all or nothing and records only entries still pending,
        // so sending a batch again (Redis refused it, or its reply was lost) records
        // each outcome once. Meanwhile the entries stay held and refreshed, and the
        // readers stop taking work once `max_unflushed` outcomes wait.
        let mut failures = 0;
        while !batch.is_empty() {
            match flush(&shared, &batch).await {
                Ok(codes) => {
                    account(&shared, &batch, &codes);
                    batch.clear();
                }
                Err(e) => {
                    failures += 1;
                    if is_nogroup(&e) {
                        let _ = shared.queue.ensure_groups().await;
                    }
                    shared.log.warn("recording finished tasks", &e);
                    tokio::time::sleep(redis_backoff(failures)).await;
                }
            }
        }
        if let Some(ack) = stop {
            let _ = ack.send(());
            return;
        }
    }
}

/// Counts what a flush recorded: `codes` holds the finish script's code per entry.
fn account(shared: &Shared, batch: &[Done], codes: &[i64]) {
    let mut finished = 0;
    {
        let mut held = lock(&shared.held);
        let mut lost = lock(&shared.lost);
        for (d, code) in batch.iter().zip(codes) {
            let slot = d.entry.slot();
            held.remove(&slot);
            lost.remove(&slot);
            match (code, &d.outcome) {
                // No longer pending: another worker (or a lost reply) finished it.
                (0, _) | (_, Outcome::Skip) => {}
                (1, Outcome::Completed(_)) => {
                    finished += 1;
                    shared.metrics.completed.increment();
                }
                (1, Outcome::Cancelled) => finished += 1,
                _ => {
                    finished += 1;
                    shared.metrics.failed.increment();
                    shared.metrics.dead.increment();
                }
            }
        }
    }
    shared.processed.fetch_add(finished, Ordering::Relaxed);
    shared.unflushed.fetch_sub(batch.len(), Ordering::Relaxed);
    shared.flushed.notify_waiters();
}

/// Records a batch of outcomes and acknowledges their entries in one atomic script;
/// returns the script's code per entry.
async fn flush(shared: &Shared, batch: &[Done]) -> Result<Vec<i64>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    // `scripts::FINISH_FIELDS` arguments per entry, in the order the script reads them.
    let mut inv = shared.queue.inner.scripts.finish.prepare_invoke();
    for s in &keys.streams {
        inv.key(s);
    }
    inv.key(&keys.dead)
        .key(&keys.stats)
        .arg(&cfg.group)
        .arg(&keys.task_prefix)
        .arg(now_ms())
        .arg(ms(cfg.result_ttl))
        .arg(cfg.dead_letter_cap);
    for d in batch {
        let (kind, text, attempts) = d.outcome.kind();
        let dead = matches!(kind, "d" | "p");
        inv.arg(d.entry.prio.index())
            .arg(&d.entry.entry_id)
            .arg(&d.entry.raw_id)
            .arg(kind)
            .arg(text)
            .arg(attempts)
            .arg(if dead { d.entry.handler.as_str() } else { "" })
            .arg(if dead { d.entry.payload.as_str() } else { "" });
    }
    let mut conn = shared.queue.conn();
    let mut reply: Vec<i64> =
        bounded(cfg.op_timeout, "finish", inv.invoke_async(&mut conn)).await?;
    if reply.len() != batch.len() + 1 {
        return Err(Error::Failed(
            "finish script returned a short reply".to_owned(),
        ));
    }
    let trimmed = reply.remove(0);
    if trimmed > 0 {
        let n = u64::try_from(trimmed).unwrap_or(0);
        shared.metrics.dead_trimmed.add(n);
        shared.trim_log.note(|suppressed| {
            tracing::warn!(
                trimmed = n,
                cap = cfg.dead_letter_cap,
                earlier_trims = suppressed,
                "durable tasks: the dead-letter stream is full; deleted its oldest dead letters (raise `dead_letter_cap` / TASKS_DEAD_LETTER_CAP to keep more)"
            );
        });
    }
    Ok(reply)
}

async fn maintenance(
    shared: Arc<Shared>,
    stop_reading: watch::Receiver<bool>,
    mut stop_all: watch::Receiver<bool>,
) {
    let vis = shared.config().visibility_timeout;
    let mut refresh = tokio::time::interval(vis / 3);
    let mut reclaim = tokio::time::interval(vis / 2);
    let mut cancels = tokio::time::interval((vis / 3).min(Duration::from_millis(500)));
    let mut prune = tokio::time::interval(vis * 2);
    for t in [&mut refresh, &mut reclaim, &mut cancels, &mut prune] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    // Where each stream's XAUTOCLAIM scan goes on from.
    let mut cursors: [String; 3] = Default::default();
    // A recovery failed: try again at the next refresh.
    let mut recover_due = false;
    loop {
        let r = tokio::select! {
            biased;
            _ = stop_all.changed() => return,
            () = shared.recover.notified() => {
                recover_due = false;
                if *stop_reading.borrow() {
                    // Shutting down: what is pending is released or reclaimed.
                    Ok(())
                } else {
                    recover_own(&shared).await.map_err(|e| {
                        recover_due = true;
                        ("recovering tasks whose reply was lost", e)
                    })
                }
            }
            _ = refresh.tick() => {
                if std::mem::take(&mut recover_due) {
                    shared.recover.notify_one();
                }
                heartbeat(&shared).await.map_err(|e| ("refreshing tasks", e))
            }
            _ = reclaim.tick() => {
                if *stop_reading.borrow() {
                    Ok(())
                } else {
                    reclaim_idle(&shared, &mut cursors).await.map_err(|e| ("reclaiming tasks", e))
                }
            }
            _ = cancels.tick() => poll_cancels(&shared).await.map_err(|e| ("checking cancels", e)),
            _ = prune.tick() => prune_consumers(&shared).await.map_err(|e| ("removing dead consumers", e)),
        };
        if let Err((what, e)) = r {
            if is_nogroup(&e) {
                let _ = shared.queue.ensure_groups().await;
            } else {
                shared.log.warn(what, &e);
            }
        }
    }
}

/// Resets the idle time of every entry this worker holds, and says it is alive.
async fn heartbeat(shared: &Shared) -> Result<()> {
    let held: Vec<Slot> = {
        let held = lock(&shared.held);
        let lost = lock(&shared.lost);
        held.keys()
            .filter(|s| !lost.contains(*s))
            .cloned()
            .collect()
    };
    let mut newly_lost = Vec::new();
    for chunk in held.chunks(4096) {
        newly_lost.extend(refresh(shared, chunk, 0, Some(now_ms())).await?);
    }
    if held.is_empty() {
        refresh(shared, &[], 0, Some(now_ms())).await?;
    }
    if !newly_lost.is_empty() {
        tracing::warn!(
            count = newly_lost.len(),
            "durable tasks: another worker reclaimed tasks this worker held (its refresh came too late); they are that worker's now"
        );
        let held = lock(&shared.held);
        lock(&shared.lost).extend(newly_lost.into_iter().filter(|s| held.contains_key(s)));
    }
    Ok(())
}

/// Claims entries other workers left idle for the visibility timeout.
///
/// `XAUTOCLAIM` scans at most ten times `COUNT` pending entries per call, live ones
/// included, so each stream's scan goes on from where the last call stopped (`cursors`)
/// rather than from the start: a dead worker's entries behind many live ones are
/// reached too.
async fn reclaim_idle(shared: &Shared, cursors: &mut [String; 3]) -> Result<()> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    // Claim no more than this worker can start now: an entry claimed by a worker
    // without a free slot would wait here while others could run it.
    let mut room = cfg.batch.min(shared.sem.available_permits());
    for p in Priority::ALL {
        let cursor = &mut cursors[p.index()];
        for _ in 0..RECLAIM_CALLS {
            if room == 0 {
                return Ok(());
            }
            let from = if cursor.is_empty() {
                "0-0"
            } else {
                cursor.as_str()
            };
            let reply: StreamAutoClaimReply = bounded(
                cfg.op_timeout,
                "XAUTOCLAIM",
                redis::cmd("XAUTOCLAIM")
                    .arg(keys.stream(p))
                    .arg(&cfg.group)
                    .arg(&shared.consumer)
                    .arg(ms(cfg.visibility_timeout))
                    .arg(from)
                    .arg("COUNT")
                    .arg(room)
                    .query_async(&mut conn),
            )
            .await
            .inspect_err(|_| shared.recover.notify_one())?;
            let wrapped = reply.next_stream_id == "0-0";
            *cursor = reply.next_stream_id;
            room = room.saturating_sub(reply.claimed.len());
            // Our own entries can look idle if a refresh failed; we still run them.
            let entries = shared.hold(reply.claimed.into_iter().map(|e| Entry::parse(p, e)));
            if !entries.is_empty() {
                tracing::info!(
                    count = entries.len(),
                    priority = %p,
                    "durable tasks: reclaimed tasks idle past the visibility timeout"
                );
                let _ = shared.reclaim_tx.send(entries);
            }
            if wrapped {
                break;
            }
        }
    }
    Ok(())
}

/// Finds entries pending for this worker that it does not hold: delivered by a call
/// whose reply was lost (a timeout, a dropped connection). They were started under this
/// worker's start requests, so starting them again (the same requests) runs the attempt
/// the lost reply started, and counts no attempt that never ran.
async fn recover_own(shared: &Shared) -> Result<()> {
    const PAGE: usize = 1000;
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    for p in Priority::ALL {
        let stream = keys.stream(p);
        let mut from = "-".to_owned();
        loop {
            let reply: StreamPendingCountReply = bounded(
                cfg.op_timeout,
                "XPENDING",
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(&cfg.group)
                    .arg(&from)
                    .arg("+")
                    .arg(PAGE)
                    .arg(&shared.consumer)
                    .query_async(&mut conn),
            )
            .await?;
            let unheld: Vec<String> = {
                let held = lock(&shared.held);
                reply
                    .ids
                    .iter()
                    .filter(|x| !held.contains_key(&(p.index(), x.id.clone())))
                    .map(|x| x.id.clone())
                    .collect()
            };
            if !unheld.is_empty() {
                let mut pipe = redis::pipe();
                for id in &unheld {
                    pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
                }
                let ranges: Vec<StreamRangeReply> =
                    bounded(cfg.op_timeout, "XRANGE", pipe.query_async(&mut conn)).await?;
                let entries = shared.hold(
                    ranges
                        .into_iter()
                        .flat_map(|r| r.ids)
                        .map(|e| Entry::parse(p, e)),
                );
                if !entries.is_empty() {
                    tracing::info!(
                        count = entries.len(),
                        priority = %p,
                        "durable tasks: recovered tasks delivered by a call whose reply was lost"
                    );
                    let _ = shared.reclaim_tx.send(entries);
                }
            }
            match reply.ids.last() {
                Some(last) if reply.ids.len() == PAGE => from = format!("({}", last.id),
                _ => break,
            }
        }
    }
    Ok(())
}

/// Removes consumers of dead workers from the group (those with no pending entry, idle
/// for twice the visibility timeout) and their heartbeats from the workers set.
async fn prune_consumers(shared: &Shared) -> Result<()> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let dead_after = ms(cfg.visibility_timeout).saturating_mul(2);
    let mut inv = shared.queue.inner.scripts.prune.prepare_invoke();
    for s in &keys.streams {
        inv.key(s);
    }
    inv.key(&keys.workers)
        .arg(&cfg.group)
        .arg(&shared.consumer)
        .arg(dead_after)
        .arg(now_ms().saturating_sub(dead_after));
    let mut conn = shared.queue.conn();
    let removed: u64 = bounded(cfg.op_timeout, "prune", inv.invoke_async(&mut conn)).await?;
    if removed > 0 {
        tracing::info!(
            removed,
            "durable tasks: removed idle consumers without pending tasks from the group"
        );
    }
    Ok(())
}

/// Aborts running tasks whose cancel was requested.
async fn poll_cancels(shared: &Shared) -> Result<()> {
    let running: Vec<(Slot, TaskId)> = lock(&shared.live)
        .iter()
        .map(|(s, l)| (s.clone(), l.id))
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    let keys = shared.queue.keys();
    let mut pipe = redis::pipe();
    for (_, id) in &running {
        pipe.cmd("HGET").arg(keys.task(*id)).arg("cancel");
    }
    let mut conn = shared.queue.conn();
    let flags: Vec<Option<String>> = bounded(
        shared.config().op_timeout,
        "HGET",
        pipe.query_async(&mut conn),
    )
    .await?;
    let cancelled: HashSet<usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_some())
        .map(|(i, _)| i)
        .collect();
    for (i, ((prio, entry_id), id)) in running.into_iter().enumerate() {
        if !cancelled.contains(&i) {
            continue;
        }
        let Some(live) = lock(&shared.live).remove(&(prio, entry_id.clone())) else {
            continue;
        };
        live.abort.abort();
        shared.live_changed.notify_waiters();
        tracing::debug!(task = %id, "durable tasks: cancelled a running task");
        shared.send(Done {
            entry: Entry::new(
                Priority::ALL[prio],
                entry_id,
                id.to_string(),
                String::new(),
                String::new(),
            ),
            outcome: Outcome::Cancelled,
        });
    }
    Ok(())
}
