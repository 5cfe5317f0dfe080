//! Recording outcomes: whatever finished while the last batch was in flight goes to
//! Redis in one atomic `finish` script, sent again until Redis takes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::shared::{Done, FINISH_BATCH, FinMsg, Outcome, Shared, lock};
use crate::durable::redis_util::{bounded, is_nogroup, ms, now_ms, redis_backoff, warn_retrying};
use crate::{Error, Result};

pub(super) async fn finisher(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<FinMsg>) {
    let mut batch = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let stop = fill(first, &mut rx, &mut batch);
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
                    warn_retrying(&shared.log, "recording finished tasks", &e);
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
pub(super) fn account(shared: &Shared, batch: &[Done], codes: &[i64]) {
    {
        let mut held = lock(&shared.held);
        let mut lost = lock(&shared.lost);
        for d in batch {
            let slot = d.entry.slot();
            held.remove(&slot);
            lost.remove(&slot);
        }
    }
    let t = tally(batch, codes);
    shared.metrics.completed.add(t.completed);
    shared.metrics.failed.add(t.dead);
    shared.metrics.dead.add(t.dead);
    shared.processed.fetch_add(t.finished, Ordering::Relaxed);
    shared.unflushed.fetch_sub(batch.len(), Ordering::Relaxed);
    shared.flushed.notify_waiters();
}

/// The first message and whatever else is waiting, up to [`FINISH_BATCH`] outcomes, go
/// into `batch`: what finished while the previous flush was in flight goes out in one
/// round trip, so acknowledgements batch themselves under load. A stop request ends
/// the batch (everything sent before it is in it) and is returned.
pub(super) fn fill(
    first: FinMsg,
    rx: &mut mpsc::UnboundedReceiver<FinMsg>,
    batch: &mut Vec<Done>,
) -> Option<oneshot::Sender<()>> {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            FinMsg::Done(d) => batch.push(d),
            FinMsg::Stop(ack) => return Some(ack),
        }
        if batch.len() < FINISH_BATCH {
            next = rx.try_recv().ok();
        }
    }
    None
}

/// What a recorded batch counts, from the finish script's code per entry (1: recorded
/// now; 0: no longer pending, another worker or an earlier copy of this batch recorded
/// it, so it counts nothing here).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Final statuses recorded: completed, dead (failed or parked), cancelled.
    pub(super) finished: u64,
    pub(super) completed: u64,
    /// Failed for good: dead-lettered or parked.
    pub(super) dead: u64,
}

pub(super) fn tally(batch: &[Done], codes: &[i64]) -> Tally {
    let mut t = Tally::default();
    for (d, code) in batch.iter().zip(codes) {
        match (code, &d.outcome) {
            (0, _) | (_, Outcome::Skip) => {}
            (_, Outcome::Completed(_)) => {
                t.finished += 1;
                t.completed += 1;
            }
            (_, Outcome::Cancelled) => t.finished += 1,
            (_, Outcome::Dead { .. } | Outcome::Parked { .. }) => {
                t.finished += 1;
                t.dead += 1;
            }
        }
    }
    t
}

/// Records a batch of outcomes and acknowledges their entries in one atomic script;
/// returns the script's code per entry.
pub(super) async fn flush(shared: &Shared, batch: &[Done]) -> Result<Vec<i64>> {
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
        .arg(now_ms())
        .arg(ms(cfg.result_ttl))
        .arg(cfg.dead_letter_cap);
    for d in batch {
        let (kind, text, attempts) = d.outcome.kind();
        let dead = matches!(kind, "d" | "p");
        inv.key(keys.task_raw(&d.entry.raw_id))
            .arg(d.entry.prio.index())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Priority;
    use crate::durable::worker::shared::Entry;

    fn done(n: u64, outcome: Outcome) -> Done {
        Done {
            entry: Entry::new(
                Priority::Normal,
                format!("{n}-0"),
                format!("{n:x}"),
                "h".into(),
                "null".into(),
            ),
            outcome,
        }
    }

    #[test]
    fn a_batch_takes_what_waits_up_to_the_cap_and_stops_at_a_stop() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for n in 0..(FINISH_BATCH as u64 + 10) {
            tx.send(FinMsg::Done(done(n, Outcome::Skip))).unwrap();
        }
        let (ack, _ack_rx) = oneshot::channel();
        tx.send(FinMsg::Stop(ack)).unwrap();
        tx.send(FinMsg::Done(done(9999, Outcome::Skip))).unwrap();

        let mut batch = Vec::new();
        let first = rx.try_recv().unwrap();
        assert!(fill(first, &mut rx, &mut batch).is_none());
        assert_eq!(batch.len(), FINISH_BATCH, "capped");
        assert_eq!(batch[0].entry.entry_id, "0-0", "in order");

        let mut batch = Vec::new();
        let first = rx.try_recv().unwrap();
        assert!(
            fill(first, &mut rx, &mut batch).is_some(),
            "the stop ends the batch"
        );
        assert_eq!(batch.len(), 10, "everything sent before the stop");
        // What came after the stop waits for the next batch.
        assert!(matches!(rx.try_recv(), Ok(FinMsg::Done(_))));

        let mut batch = Vec::new();
        let (ack, _ack_rx) = oneshot::channel();
        assert!(fill(FinMsg::Stop(ack), &mut rx, &mut batch).is_some());
        assert!(batch.is_empty());
    }

    #[test]
    fn only_outcomes_recorded_now_are_counted() {
        let batch = [
            done(1, Outcome::Completed("1".into())),
            done(2, Outcome::Completed("2".into())),
            done(3, Outcome::Cancelled),
            done(
                4,
                Outcome::Dead {
                    error: "e".into(),
                    attempts: 3,
                },
            ),
            done(
                5,
                Outcome::Parked {
                    error: "bad".into(),
                    attempts: 0,
                },
            ),
            done(6, Outcome::Skip),
        ];
        assert_eq!(
            tally(&batch, &[1, 1, 1, 1, 1, 1]),
            Tally {
                finished: 5,
                completed: 2,
                dead: 2
            }
        );
        // A batch sent again after a lost reply: nothing was pending any more.
        assert_eq!(tally(&batch, &[0; 6]), Tally::default());
        assert_eq!(
            tally(&batch, &[0, 1, 0, 1, 0, 1]),
            Tally {
                finished: 2,
                completed: 1,
                dead: 1
            }
        );
    }
}
