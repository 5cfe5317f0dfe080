use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cortex_metrics::{Counter, Histogram};
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use super::queue::DurableQueue;
use super::redis_util::{LogLimiter, bounded, is_nogroup, ms, now_ms, random_u64, redis_backoff};
use super::registry::{AttemptError, Handler, Registry};
use crate::{Error, Priority, Result, TaskId};

/// Where a delivered entry lives: its stream (by priority index) and its entry id.
type Slot = (usize, String);

/// One delivered stream entry.
#[derive(Debug)]
struct Entry {
    prio: Priority,
    entry_id: String,
    id: TaskId,
    handler: String,
    payload: String,
}

impl Entry {
    fn slot(&self) -> Slot {
        (self.prio.index(), self.entry_id.clone())
    }

    fn parse(prio: Priority, e: StreamId) -> Self {
        let field = |k: &str| e.get::<String>(k).unwrap_or_default();
        Self {
            prio,
            // An entry without a valid id cannot be run; id 0 has no record, so the
            // start script reports it missing and it is acknowledged away.
            id: field("id").parse().unwrap_or(TaskId::from_u64(0)),
            handler: field("handler"),
            payload: field("payload"),
            entry_id: e.id,
        }
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
    Cancelled,
    /// Acknowledge only: cancelled while queued, already final, or without a record.
    Skip,
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
}

impl Metrics {
    fn new() -> Self {
        let m = cortex_metrics::global();
        Self {
            wait: m.histogram("tasks.durable.wait"),
            run: m.histogram("tasks.durable.run"),
            completed: m.counter("tasks.durable.completed"),
            failed: m.counter("tasks.durable.failed"),
            retried: m.counter("tasks.durable.retried"),
            dead: m.counter("tasks.durable.dead"),
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
    /// Tasks started and not finished; whoever removes one decides its outcome.
    live: Mutex<HashMap<Slot, Live>>,
    live_changed: Notify,
    /// Signalled when the main reader finds work, to wake the helper reader.
    active: Notify,
    processed: AtomicU64,
    fin_tx: mpsc::UnboundedSender<FinMsg>,
    reclaim_tx: mpsc::UnboundedSender<Vec<Entry>>,
    log: LogLimiter,
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
        // The finisher outlives every sender except after a shutdown gave up on it; the
        // entry then stays pending and is reclaimed.
        let _ = self.fin_tx.send(FinMsg::Done(done));
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
pub struct Worker {
    queue: DurableQueue,
    registry: Registry,
    consumer: String,
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
        }
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
        let concurrency = self.queue.config().concurrency;
        let shared = Arc::new(Shared {
            queue: self.queue,
            registry: self.registry,
            consumer: self.consumer,
            sem: Arc::new(Semaphore::new(concurrency)),
            held: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            live_changed: Notify::new(),
            active: Notify::new(),
            processed: AtomicU64::new(0),
            fin_tx,
            reclaim_tx,
            log: LogLimiter::new(Duration::from_secs(5)),
            metrics: Metrics::new(),
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
    pub fn processed(&self) -> u64 {
        self.shared.processed.load(Ordering::Relaxed)
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    /// Stops reading new tasks, lets running ones finish until `deadline`, then aborts
    /// the rest.
    ///
    /// Aborted tasks, and tasks read but not started, stay pending in Redis: they are
    /// marked reclaimable at once, so another worker runs them; the aborted attempt does
    /// not count towards `max_attempts`. Nothing accepted is lost.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let until = Instant::now() + deadline;
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
        let flush_by = until.max(Instant::now()) + shared.config().op_timeout;
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
    let held: Vec<Slot> = lock(&shared.held).drain().map(|(slot, _)| slot).collect();
    if held.is_empty() {
        return Ok(());
    }
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    let mut pipe = redis::pipe();
    for (i, stream) in keys.streams.iter().enumerate() {
        let ids: Vec<&str> = held
            .iter()
            .filter(|(p, _)| *p == i)
            .map(|(_, e)| e.as_str())
            .collect();
        if ids.is_empty() {
            continue;
        }
        pipe.cmd("XCLAIM")
            .arg(stream)
            .arg(&cfg.group)
            .arg(&shared.consumer)
            .arg(0)
            .arg(&ids)
            .arg("IDLE")
            .arg(ms(cfg.visibility_timeout))
            .arg("JUSTID")
            .ignore();
    }
    if !aborted.is_empty() {
        let mut inv = shared.queue.inner.scripts.release.arg(&keys.task_prefix);
        for (_, id) in aborted {
            inv.arg(id.to_string());
        }
        bounded(cfg.op_timeout, "release", inv.invoke_async::<()>(&mut conn)).await?;
    }
    bounded(cfg.op_timeout, "XCLAIM", pipe.query_async::<()>(&mut conn)).await
}

/// Reads and starts up to `count` new entries in one round trip.
async fn take(shared: &Shared, count: usize) -> Result<Vec<(Entry, i64, u32)>> {
    type Row = (usize, String, String, String, String, i64, u32);
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
    let rows: Vec<Row> = bounded(cfg.op_timeout, "take", inv.invoke_async(&mut conn)).await?;
    Ok(rows
        .into_iter()
        .map(|(s, entry_id, id, handler, payload, code, attempts)| {
            let entry = Entry {
                prio: Priority::ALL[s.min(2)],
                entry_id,
                id: id.parse().unwrap_or(TaskId::from_u64(0)),
                handler,
                payload,
            };
            (entry, code, attempts)
        })
        .collect())
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
    let mut permits = vec![first];
    while permits.len() < batch {
        match shared.sem.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Runs the start script for `batch`, returning `(code, attempts)` per entry.
async fn start(shared: &Shared, batch: &[Entry]) -> Result<Vec<(i64, u32)>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut inv = shared.queue.inner.scripts.start.arg(&keys.task_prefix);
    inv.arg(now_ms())
        .arg(cfg.max_attempts)
        .arg(&keys.stats)
        .arg(ms(cfg.result_ttl));
    for e in batch {
        inv.arg(e.id.to_string());
    }
    let mut conn = shared.queue.conn();
    let codes: Vec<(i64, u32)> =
        bounded(cfg.op_timeout, "start", inv.invoke_async(&mut conn)).await?;
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
    // A blocking read must have a socket of its own: on the shared multiplexed one it
    // would hold up every other command for up to `block`.
    let read_conn = shared.queue.inner.client.clone();
    let conn_cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(cfg.block + cfg.op_timeout))
        .set_connection_timeout(Some(cfg.op_timeout))
        .set_number_of_retries(2);
    let mut conn = match ConnectionManager::new_lazy_with_config(read_conn, conn_cfg) {
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
                    {
                        let mut held = lock(&shared.held);
                        for (e, _, _) in &taken {
                            held.insert(e.slot(), e.id);
                        }
                    }
                    for (e, code, attempts) in taken {
                        dispatch(&shared, e, code, attempts, &mut permits);
                    }
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
                    let mut held = lock(&shared.held);
                    for e in entries {
                        held.insert(e.slot(), e.id);
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
        for q in &mut backlog {
            while batch.len() < permits.len() {
                match q.pop_front() {
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        match start(&shared, &batch).await {
            Ok(codes) => {
                failures = 0;
                for (e, (code, attempts)) in batch.into_iter().zip(codes) {
                    dispatch(&shared, e, code, attempts, &mut permits);
                }
            }
            Err(e) => {
                failures += 1;
                shared.log.warn("starting tasks", &e);
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
                {
                    let mut held = lock(&shared.held);
                    for (e, _, _) in &taken {
                        held.insert(e.slot(), e.id);
                    }
                }
                for (e, code, attempts) in taken {
                    dispatch(&shared, e, code, attempts, &mut permits);
                }
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
    code: i64,
    attempts: u32,
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
            let Some(permit) = permits.pop() else {
                // Cannot happen: the batch is never larger than the permits taken.
                shared.send(Done {
                    entry: e,
                    outcome: Outcome::Skip,
                });
                return;
            };
            let slot = e.slot();
            let id = e.id;
            // Insert under the lock held across the spawn, so the task cannot finish
            // before it is registered.
            let mut live = lock(&shared.live);
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
    .await?;
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
        let mut failures = 0;
        let (code, a) = loop {
            match start(&shared, std::slice::from_ref(&e)).await {
                Ok(codes) => break codes[0],
                Err(err) => {
                    failures += 1;
                    shared.log.warn("starting a retry", &err);
                    tokio::time::sleep(redis_backoff(failures)).await;
                }
            }
        };
        match code {
            1 => attempts = a,
            4 => break Outcome::Dead { error, attempts: a },
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
        while stop.is_none() && batch.len() < 1024 {
            match rx.try_recv() {
                Ok(FinMsg::Done(d)) => batch.push(d),
                Ok(FinMsg::Stop(ack)) => stop = Some(ack),
                Err(_) => break,
            }
        }
        let mut failures = 0;
        while !batch.is_empty() {
            match flush(&shared, &batch).await {
                Ok(()) => {
                    account(&shared, &batch);
                    batch.clear();
                }
                Err(e) => {
                    failures += 1;
                    shared.log.warn("acknowledging tasks", &e);
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

fn account(shared: &Shared, batch: &[Done]) {
    let mut held = lock(&shared.held);
    let mut finished = 0;
    for d in batch {
        held.remove(&d.entry.slot());
        match d.outcome {
            Outcome::Completed(_) => {
                finished += 1;
                shared.metrics.completed.increment();
            }
            Outcome::Dead { .. } => {
                finished += 1;
                shared.metrics.failed.increment();
                shared.metrics.dead.increment();
            }
            Outcome::Cancelled => finished += 1,
            Outcome::Skip => {}
        }
    }
    shared.processed.fetch_add(finished, Ordering::Relaxed);
}

async fn flush(shared: &Shared, batch: &[Done]) -> Result<()> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let now = now_ms();
    let ttl = ms(cfg.result_ttl);
    // No MULTI (it costs Redis a second dispatch per command): the final status is
    // written before the acknowledgement, and a crash between the two is safe because
    // the start script refuses a task whose status is final.
    let mut pipe = redis::pipe();
    let mut acks: [Vec<&str>; 3] = Default::default();
    let (mut completed, mut failed, mut cancelled) = (0u64, 0u64, 0u64);
    for d in batch {
        acks[d.entry.prio.index()].push(&d.entry.entry_id);
        let key = keys.task(d.entry.id);
        match &d.outcome {
            Outcome::Completed(json) => {
                completed += 1;
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("completed")
                    .arg("result")
                    .arg(json)
                    .arg("finished_at")
                    .arg(now)
                    .ignore();
            }
            Outcome::Dead { error, attempts } => {
                failed += 1;
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("failed")
                    .arg("error")
                    .arg(error)
                    .arg("attempts")
                    .arg(attempts)
                    .arg("finished_at")
                    .arg(now)
                    .ignore();
                pipe.cmd("XADD")
                    .arg(&keys.dead)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(100_000)
                    .arg("*")
                    .arg("id")
                    .arg(d.entry.id.to_string())
                    .arg("handler")
                    .arg(&d.entry.handler)
                    .arg("payload")
                    .arg(&d.entry.payload)
                    .arg("error")
                    .arg(error)
                    .arg("attempts")
                    .arg(attempts)
                    .ignore();
            }
            Outcome::Cancelled => {
                cancelled += 1;
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("cancelled")
                    .arg("finished_at")
                    .arg(now)
                    .ignore();
            }
            Outcome::Skip => continue,
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
    }
    for (stream, ids) in keys.streams.iter().zip(&acks) {
        if ids.is_empty() {
            continue;
        }
        pipe.cmd("XACK")
            .arg(stream)
            .arg(&cfg.group)
            .arg(ids)
            .ignore();
        // Acknowledged entries are deleted, so the stream only holds live tasks.
        pipe.cmd("XDEL").arg(stream).arg(ids).ignore();
    }
    for (field, n) in [
        ("completed", completed),
        ("failed", failed),
        ("cancelled", cancelled),
    ] {
        if n > 0 {
            pipe.cmd("HINCRBY")
                .arg(&keys.stats)
                .arg(field)
                .arg(n)
                .ignore();
        }
    }
    let mut conn = shared.queue.conn();
    bounded(
        cfg.op_timeout,
        "acknowledge",
        pipe.query_async::<()>(&mut conn),
    )
    .await
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
    for t in [&mut refresh, &mut reclaim, &mut cancels] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        let r = tokio::select! {
            biased;
            _ = stop_all.changed() => return,
            _ = refresh.tick() => heartbeat(&shared).await.map_err(|e| ("refreshing tasks", e)),
            _ = reclaim.tick() => {
                if *stop_reading.borrow() {
                    Ok(())
                } else {
                    reclaim_idle(&shared).await.map_err(|e| ("reclaiming tasks", e))
                }
            }
            _ = cancels.tick() => poll_cancels(&shared).await.map_err(|e| ("checking cancels", e)),
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
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let held: Vec<Slot> = lock(&shared.held).keys().cloned().collect();
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(&keys.workers)
        .arg(now_ms())
        .arg(&shared.consumer)
        .ignore();
    for (i, stream) in keys.streams.iter().enumerate() {
        let ids: Vec<&str> = held
            .iter()
            .filter(|(p, _)| *p == i)
            .map(|(_, e)| e.as_str())
            .collect();
        for chunk in ids.chunks(1000) {
            pipe.cmd("XCLAIM")
                .arg(stream)
                .arg(&cfg.group)
                .arg(&shared.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .ignore();
        }
    }
    let mut conn = shared.queue.conn();
    bounded(cfg.op_timeout, "XCLAIM", pipe.query_async::<()>(&mut conn)).await
}

/// Claims entries other workers left idle for the visibility timeout.
async fn reclaim_idle(shared: &Shared) -> Result<()> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    for p in Priority::ALL {
        let reply: StreamAutoClaimReply = bounded(
            cfg.op_timeout,
            "XAUTOCLAIM",
            redis::cmd("XAUTOCLAIM")
                .arg(keys.stream(p))
                .arg(&cfg.group)
                .arg(&shared.consumer)
                .arg(ms(cfg.visibility_timeout))
                .arg("0-0")
                .arg("COUNT")
                .arg(cfg.batch)
                .query_async(&mut conn),
        )
        .await?;
        if reply.claimed.is_empty() {
            continue;
        }
        let entries: Vec<Entry> = {
            let mut held = lock(&shared.held);
            let mut fresh = Vec::new();
            for e in reply.claimed.into_iter().map(|e| Entry::parse(p, e)) {
                // Our own entries can look idle if a refresh failed; we still run them.
                if held.insert(e.slot(), e.id).is_none() {
                    fresh.push(e);
                }
            }
            fresh
        };
        if !entries.is_empty() {
            tracing::info!(
                count = entries.len(),
                priority = %p,
                "durable tasks: reclaimed tasks idle past the visibility timeout"
            );
            let _ = shared.reclaim_tx.send(entries);
        }
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
            entry: Entry {
                prio: Priority::ALL[prio],
                entry_id,
                id,
                handler: String::new(),
                payload: String::new(),
            },
            outcome: Outcome::Cancelled,
        });
    }
    Ok(())
}
