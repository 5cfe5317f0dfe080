//! A durable worker, in parts: [`reader`] reads and starts entries, [`runner`] runs
//! them, [`finisher`] records their outcomes, [`maintenance`] keeps held entries alive
//! and reclaims those of dead workers; [`shared`] is what they share. This file holds
//! the public face: [`Worker`], [`WorkerHandle`] and shutdown.

mod finisher;
mod gauges;
mod maintenance;
mod reader;
mod runner;
mod shared;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::durable::queue::DurableQueue;
use cortex_support::backoff::random_u64;
use cortex_support::warn::WarnLimiter;

use self::finisher::finisher;
use self::gauges::sample_gauges;
use self::maintenance::maintenance;
use self::reader::{helper, reader};
use self::shared::{FINISH_BATCH, FinMsg, Metrics, Shared, Slot, lock};
use crate::durable::redis_util::{bounded, later, ms};
use crate::durable::registry::Registry;
use crate::{Result, TaskId};

/// A worker: reads tasks of one queue and runs them with the handlers of a [`Registry`].
///
/// It records into [`cortex_metrics::global()`] (or the registry given to
/// [`metrics`](Self::metrics)) one family per measure, labeled `queue="<queue name>"`:
/// the `durable.wait` and `durable.run` histograms (exported in seconds), the
/// `durable.completed`, `durable.failed`, `durable.retried`, `durable.dead` and
/// `durable.dead_trimmed` counters, and the gauges `durable.running` (attempts running
/// on this process's workers), `durable.scheduled` (tasks waiting for a retry on them),
/// `durable.pending` and `durable.dead_letters` (queue-wide, read from Redis every
/// [`stats_interval`](super::DurableConfig::stats_interval)).
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
            reading: AtomicUsize::new(0),
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
            log: WarnLimiter::new(Duration::from_secs(5)),
            trim_log: WarnLimiter::new(Duration::from_secs(60)),
            metrics,
        });
        let readers = vec![
            tokio::spawn(reader(shared.clone(), stop_reading_rx.clone(), reclaim_rx)),
            tokio::spawn(helper(shared.clone(), stop_reading_rx.clone())),
        ];
        let finisher = tokio::spawn(finisher(shared.clone(), fin_rx));
        let gauges = tokio::spawn(sample_gauges(shared.clone(), stop_all_rx.clone()));
        let maintenance = tokio::spawn(maintenance(shared.clone(), stop_reading_rx, stop_all_rx));
        WorkerHandle {
            shared,
            readers,
            finisher,
            maintenance,
            gauges,
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
pub struct WorkerShutdownReport {
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
    gauges: JoinHandle<()>,
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
    pub async fn shutdown(self, deadline: Duration) -> WorkerShutdownReport {
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
            tracing::warn!(error = %cortex_support::error_chain(&e), "durable tasks: could not release tasks at shutdown; they are reclaimed after the visibility timeout");
        }
        let _ = self.stop_all.send(true);
        // The sampler's reads touch nothing a later worker needs: no reason to wait.
        self.gauges.abort();
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
        WorkerShutdownReport {
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
        let mut inv = shared.queue.inner.scripts.release.prepare_invoke();
        for (_, id) in aborted {
            inv.key(keys.task(*id));
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
