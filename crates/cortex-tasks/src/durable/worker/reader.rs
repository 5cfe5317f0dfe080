//! Reading: `take` (read and start a batch in one script) under load, a blocking
//! `XREADGROUP` on a connection of its own when idle, and a helper reader that keeps a
//! second `take` in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cortex_pool::RedisManagedConnection;
use redis::streams::StreamReadReply;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::runner::dispatch;
use super::shared::{Entry, Shared, Slot, lock};
use crate::durable::redis_util::{bounded, is_nogroup, ms, now_ms, redis_backoff, warn_retrying};
use crate::{Error, Priority, Result, TaskId};

/// A start script's verdict on one entry: code, attempts, error (see `try_start`).
pub(super) type Verdict = (i64, u32, String);

/// Reads and starts up to `count` new entries in one round trip.
pub(super) async fn take(shared: &Shared, count: usize) -> Result<Vec<(Entry, Verdict)>> {
    type Row = (
        usize,
        String,
        String,
        String,
        String,
        i64,
        u32,
        String,
        String,
    );
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut inv = shared.queue.inner.scripts.take.prepare_invoke();
    for s in &keys.streams {
        inv.key(s);
    }
    inv.key(&keys.stats)
        .arg(&cfg.group)
        .arg(&shared.consumer)
        .arg(count)
        .arg(&keys.task_prefix)
        .arg(now_ms())
        .arg(cfg.max_attempts)
        .arg(ms(cfg.result_ttl));
    let mut conn = shared.queue.conn();
    let rows: Vec<Row> = bounded(cfg.op_timeout, "take", inv.invoke_async(&mut conn))
        .await
        .inspect_err(|_| shared.recover.notify_one())?;
    Ok(rows
        .into_iter()
        .map(
            |(s, entry_id, id, handler, payload, code, attempts, error, traceparent)| {
                let entry = Entry::new(Priority::ALL[s.min(2)], entry_id, id, handler, payload)
                    .with_traceparent(traceparent);
                (entry, (code, attempts, error))
            },
        )
        .collect())
}

/// Starts the entries `take` read and this worker did not hold yet.
pub(super) fn dispatch_taken(
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

/// How long a reader with a backlog behind it waits for more slots to free before it
/// takes what it has (see [`free_slots`]). Timers tick by the millisecond, so the wait
/// is at most about two.
pub(super) const GATHER: Duration = Duration::from_micros(500);

/// Waits for at least one free slot, then takes up to `batch`; `None` once the worker
/// stops.
///
/// With `backlog` (the reader's last take filled every slot it asked for, so more
/// entries are likely waiting), it waits up to [`GATHER`] for half of `batch` to be
/// free: under load slots free one by one as tasks end, and taking each as it frees
/// would spend a round trip (and a script run on Redis, whose cost is mostly per call)
/// on every few entries. Without a backlog it takes what is free at once, so an idle
/// worker starts a new task without delay.
pub(super) async fn free_slots(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    batch: usize,
    backlog: bool,
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
    gather(&shared.sem, stop, first, batch, backlog).await
}

/// The slots to take with `first`: those free now, up to `batch`; with `backlog`, after
/// waiting up to [`GATHER`] for half of `batch` (see [`free_slots`]). `None` once the
/// worker stops.
pub(super) async fn gather(
    sem: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
    first: OwnedSemaphorePermit,
    batch: usize,
    backlog: bool,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let mut permits = vec![first];
    gather_free(sem, &mut permits, batch);
    let want = (batch / 2).max(1);
    if backlog && permits.len() < want {
        let until = tokio::time::Instant::now() + GATHER;
        while permits.len() < want {
            tokio::select! {
                biased;
                _ = stop.changed() => return None,
                p = sem.clone().acquire_owned() => match p {
                    Ok(p) => permits.push(p),
                    Err(_) => return None,
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        gather_free(sem, &mut permits, batch);
    }
    Some(permits)
}

/// Adds to `permits` the slots free now, up to `batch` in all.
fn gather_free(sem: &Arc<Semaphore>, permits: &mut Vec<OwnedSemaphorePermit>, batch: usize) {
    while permits.len() < batch {
        match sem.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
}

/// Runs the start script for `batch` as start request `seq` of each entry's delivery,
/// returning the verdict per entry. Sending the same batch and `seq` again after an
/// error starts nothing twice.
pub(super) async fn start(shared: &Shared, batch: &[Entry], seq: u32) -> Result<Vec<Verdict>> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    // Every key in KEYS (the stats hash, then each entry's record), so a cluster
    // routes the script to their one slot.
    let mut inv = shared.queue.inner.scripts.start.key(&keys.stats);
    inv.arg(now_ms())
        .arg(cfg.max_attempts)
        .arg(ms(cfg.result_ttl));
    for e in batch {
        inv.key(keys.task_raw(&e.raw_id))
            .arg(&e.raw_id)
            .arg(e.token(&shared.consumer, seq));
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

pub(super) async fn reader(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut reclaimed: mpsc::UnboundedReceiver<Vec<Entry>>,
) {
    let cfg = shared.config().clone();
    // Connected on first need, and again after a failed attempt: Redis may be down
    // when the worker starts (or failing over), and the worker must keep trying.
    let mut blocking: Option<RedisManagedConnection> = None;
    let mut backlog: [VecDeque<Entry>; 3] = Default::default();
    let mut failures = 0u32;
    // Whether the last take filled every slot it had (see `free_slots`).
    let mut full = false;
    loop {
        if *stop.borrow() {
            return;
        }
        while let Ok(entries) = reclaimed.try_recv() {
            for e in entries {
                backlog[e.prio.index()].push_back(e);
            }
        }
        let Some(mut permits) = free_slots(&shared, &mut stop, cfg.batch, full).await else {
            return;
        };
        full = false;
        if backlog.iter().all(VecDeque::is_empty) {
            // Under load one round trip reads and starts a batch; only when nothing is
            // waiting does the worker block on its own connection.
            let asked = permits.len();
            match take(&shared, asked).await {
                Ok(taken) if !taken.is_empty() => {
                    failures = 0;
                    full = taken.len() >= asked;
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
            // While it blocks, the reader holds every free slot (they cap what it
            // reads): the reclaim counts them as free, or an idle worker would never
            // reclaim a dead worker's entries.
            shared.reading.store(permits.len(), Ordering::Relaxed);
            let read_result = match blocking.as_mut() {
                Some(conn) => read(&shared, conn, permits.len()).await,
                None => match shared.queue.blocking_connection().await {
                    Ok(mut conn) => {
                        let r = read(&shared, &mut conn, permits.len()).await;
                        blocking = Some(conn);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            shared.reading.store(0, Ordering::Relaxed);
            match read_result {
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
        let batch = {
            // Lock order everywhere: `held`, then `lost`.
            let mut held = lock(&shared.held);
            let mut lost = lock(&shared.lost);
            next_batch(&mut backlog, &mut held, &mut lost, permits.len())
        };
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
                warn_retrying(&shared.log, "starting tasks", &e);
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

/// Up to `n` entries from `backlog` to start, highest priority first and oldest first
/// within a level. An entry another worker reclaimed while it waited here (`lost`) is
/// that worker's to run: it is dropped, and no longer held.
pub(super) fn next_batch(
    backlog: &mut [VecDeque<Entry>; 3],
    held: &mut HashMap<Slot, TaskId>,
    lost: &mut HashSet<Slot>,
    n: usize,
) -> Vec<Entry> {
    let mut batch = Vec::with_capacity(n);
    for q in backlog.iter_mut() {
        while batch.len() < n {
            match q.pop_front() {
                Some(e) if lost.remove(&e.slot()) => {
                    held.remove(&e.slot());
                }
                Some(e) => batch.push(e),
                None => break,
            }
        }
    }
    batch
}

/// A second reader. Under load the main reader spends most of its time waiting for its
/// round trip, so the helper keeps a second `take` in flight. It never blocks on Redis
/// (the worker has one blocking connection): when nothing is waiting it sleeps until
/// the main reader finds work again.
pub(super) async fn helper(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cfg = shared.config().clone();
    let mut failures = 0u32;
    // Whether the last take filled every slot it had (see `free_slots`).
    let mut full = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(mut permits) = free_slots(&shared, &mut stop, cfg.batch, full).await else {
            return;
        };
        full = false;
        let active = shared.active.notified();
        tokio::pin!(active);
        active.as_mut().enable();
        let asked = permits.len();
        match take(&shared, asked).await {
            Ok(taken) if !taken.is_empty() => {
                failures = 0;
                full = taken.len() >= asked;
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
                    warn_retrying(&shared.log, "taking tasks", &e);
                }
                drop(permits);
                pause(&mut stop, redis_backoff(failures)).await;
            }
        }
    }
}

/// After a failed read: recreates the consumer group if Redis lost it (a restart
/// without persistence), else logs (rate-limited); then backs off.
pub(super) async fn recover(
    shared: &Shared,
    e: &Error,
    what: &str,
    stop: &mut watch::Receiver<bool>,
    failures: u32,
) {
    if is_nogroup(e) {
        if let Err(e) = shared.queue.ensure_groups().await {
            warn_retrying(&shared.log, "creating the consumer group", &e);
        }
    } else {
        warn_retrying(&shared.log, what, e);
    }
    pause(stop, redis_backoff(failures)).await;
}

pub(super) async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(d) => {}
    }
}

pub(super) async fn read(
    shared: &Shared,
    conn: &mut RedisManagedConnection,
    count: usize,
) -> Result<Vec<Entry>> {
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

pub(super) fn priority_of(shared: &Shared, key: &str) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|p| shared.queue.keys().stream(*p) == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: Priority, n: u64) -> Entry {
        Entry::new(
            p,
            format!("{n}-0"),
            format!("{n:x}"),
            "h".into(),
            "null".into(),
        )
    }

    #[test]
    fn a_batch_takes_high_before_normal_before_low_and_skips_lost_entries() {
        let mut backlog: [VecDeque<Entry>; 3] = Default::default();
        for (p, n) in [
            (Priority::Low, 1),
            (Priority::Normal, 2),
            (Priority::High, 3),
            (Priority::Normal, 4),
            (Priority::High, 5),
        ] {
            backlog[p.index()].push_back(entry(p, n));
        }
        let mut held: HashMap<Slot, TaskId> =
            backlog.iter().flatten().map(|e| (e.slot(), e.id)).collect();
        // Entry 3 was reclaimed by another worker while it waited here.
        let mut lost: HashSet<Slot> = [entry(Priority::High, 3).slot()].into();

        let ids = |b: &[Entry]| b.iter().map(|e| e.id.as_u64()).collect::<Vec<_>>();
        let first = next_batch(&mut backlog, &mut held, &mut lost, 2);
        assert_eq!(ids(&first), [5, 2]);
        assert!(lost.is_empty());
        assert!(
            !held.contains_key(&entry(Priority::High, 3).slot()),
            "no longer held"
        );
        assert_eq!(held.len(), 4, "the rest stay held until they finish");

        let rest = next_batch(&mut backlog, &mut held, &mut lost, 10);
        assert_eq!(ids(&rest), [4, 1]);
        assert!(next_batch(&mut backlog, &mut held, &mut lost, 10).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_backlog_a_reader_waits_briefly_for_half_a_batch_of_slots() {
        let sem = Arc::new(Semaphore::new(8));
        let (_stop_tx, mut stop) = watch::channel(false);
        // Six of eight slots busy: two free.
        let busy: Vec<_> = (0..6)
            .map(|_| sem.clone().try_acquire_owned().expect("free"))
            .collect();
        let first = sem.clone().try_acquire_owned().expect("free");

        // No backlog: what is free now, at once.
        let got = gather(&sem, &mut stop, first, 8, false)
            .await
            .expect("running");
        assert_eq!(got.len(), 2);
        drop(got);

        // A backlog: slots that free within GATHER join the batch, up to half of it.
        let first = sem.clone().try_acquire_owned().expect("free");
        let mut busy = busy.into_iter();
        let (b1, b2) = (busy.next().expect("busy"), busy.next().expect("busy"));
        // Runs once the reader waits (one thread: the test's task yields to it then).
        let release = tokio::spawn(async move { drop((b1, b2)) });
        let got = gather(&sem, &mut stop, first, 8, true)
            .await
            .expect("running");
        release.await.expect("release");
        assert_eq!(got.len(), 4, "two free at once, two freed while it waited");
        drop(got);

        // A backlog, half a batch free already: no wait.
        let first = sem.clone().try_acquire_owned().expect("free");
        let t0 = tokio::time::Instant::now();
        let got = gather(&sem, &mut stop, first, 8, true)
            .await
            .expect("running");
        assert_eq!(got.len(), 4);
        assert_eq!(t0.elapsed(), Duration::ZERO);

        // A backlog and nothing freeing: after GATHER, what it has.
        let mut got = got.into_iter();
        let first = got.next().expect("one");
        let t0 = tokio::time::Instant::now();
        let alone = gather(&sem, &mut stop, first, 8, true)
            .await
            .expect("running");
        assert_eq!(alone.len(), 1);
        // The test's clock is paused (tokio's virtual time): this checks that the
        // wait ended at its deadline, not how fast anything ran.
        assert!(t0.elapsed() >= GATHER, "gave up waiting after GATHER");
        drop((got, busy));

        // Stopping ends the wait.
        let (stop_tx, mut stop) = watch::channel(false);
        let _all: Vec<_> = (0..7)
            .map(|_| sem.clone().try_acquire_owned().expect("free"))
            .collect();
        drop(alone);
        let first = sem.clone().try_acquire_owned().expect("free");
        stop_tx.send(true).expect("stop");
        assert!(gather(&sem, &mut stop, first, 8, true).await.is_none());
    }
}
