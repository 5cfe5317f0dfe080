//! Upkeep on timers: heartbeats (refreshing held entries), reclaiming entries idle
//! past the visibility timeout, recovering entries a lost reply delivered, pruning dead
//! consumers, and noticing cancels of running tasks.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply, StreamRangeReply};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::refresh;
use super::shared::{Done, Entry, Outcome, Shared, Slot, lock};
use crate::durable::redis_util::{bounded, is_nogroup, ms, now_ms, warn_retrying};
use crate::{Priority, Result, TaskId};

/// Most `XAUTOCLAIM` calls per stream per reclaim tick: each scans at most ten times
/// `batch` pending entries, and the cursor carries the scan over to the next tick.
pub(super) const RECLAIM_CALLS: usize = 16;

pub(super) async fn maintenance(
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
    let mut cursors = Cursors::default();
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
                warn_retrying(&shared.log, what, &e);
            }
        }
    }
}

/// Resets the idle time of every entry this worker holds, and says it is alive.
pub(super) async fn heartbeat(shared: &Shared) -> Result<()> {
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

/// Where each stream's `XAUTOCLAIM` scan of the pending list goes on from.
#[derive(Debug, Default)]
pub(super) struct Cursors([String; 3]);

impl Cursors {
    /// The id the next call for `p` starts at: where the last one stopped, or the
    /// start of the pending list.
    pub(super) fn from(&self, p: Priority) -> &str {
        match self.0[p.index()].as_str() {
            "" => "0-0",
            cursor => cursor,
        }
    }

    /// Records where the call for `p` stopped (`XAUTOCLAIM`'s next id); `true` when
    /// the scan went round the whole list (Redis answers `0-0`), so the next call
    /// starts over.
    pub(super) fn advance(&mut self, p: Priority, next: String) -> bool {
        let wrapped = next == "0-0";
        self.0[p.index()] = next;
        wrapped
    }
}

/// Claims entries other workers left idle for the visibility timeout.
///
/// `XAUTOCLAIM` scans at most ten times `COUNT` pending entries per call, live ones
/// included, so each stream's scan goes on from where the last call stopped (`cursors`)
/// rather than from the start: a dead worker's entries behind many live ones are
/// reached too.
pub(super) async fn reclaim_idle(shared: &Shared, cursors: &mut Cursors) -> Result<()> {
    let cfg = shared.config();
    let keys = shared.queue.keys();
    let mut conn = shared.queue.conn();
    // Claim no more than this worker can start now: an entry claimed by a worker
    // without a free slot would wait here while others could run it. The slots the
    // main reader holds while it blocks for new entries are free too: it starts what
    // is claimed here when its read returns (within `block`).
    let free = shared.sem.available_permits() + shared.reading.load(Ordering::Relaxed);
    let mut room = cfg.batch.min(free);
    for p in Priority::ALL {
        for _ in 0..RECLAIM_CALLS {
            if room == 0 {
                return Ok(());
            }
            let from = cursors.from(p).to_owned();
            let reply: StreamAutoClaimReply = bounded(
                cfg.op_timeout,
                "XAUTOCLAIM",
                redis::cmd("XAUTOCLAIM")
                    .arg(keys.stream(p))
                    .arg(&cfg.group)
                    .arg(&shared.consumer)
                    .arg(ms(cfg.visibility_timeout))
                    .arg(&from)
                    .arg("COUNT")
                    .arg(room)
                    .query_async(&mut conn),
            )
            .await
            .inspect_err(|_| shared.recover.notify_one())?;
            let wrapped = cursors.advance(p, reply.next_stream_id);
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
pub(super) async fn recover_own(shared: &Shared) -> Result<()> {
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
pub(super) async fn prune_consumers(shared: &Shared) -> Result<()> {
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
pub(super) async fn poll_cancels(shared: &Shared) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_scan_goes_on_from_where_it_stopped() {
        let mut c = Cursors::default();
        for p in Priority::ALL {
            assert_eq!(c.from(p), "0-0", "a scan starts at the beginning");
        }
        assert!(!c.advance(Priority::Normal, "1700000000000-5".into()));
        assert_eq!(c.from(Priority::Normal), "1700000000000-5");
        assert_eq!(
            c.from(Priority::High),
            "0-0",
            "streams keep their own cursor"
        );
        assert!(!c.advance(Priority::Normal, "1700000000001-0".into()));
        assert_eq!(c.from(Priority::Normal), "1700000000001-0");
        // Round the whole list: the next scan starts over.
        assert!(c.advance(Priority::Normal, "0-0".into()));
        assert_eq!(c.from(Priority::Normal), "0-0");
    }
}
