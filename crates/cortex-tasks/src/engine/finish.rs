//! How an attempt ends: back to its queue after a backoff, or a final status recorded,
//! its handle woken and its record retired.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Engine;
use super::record::{Cancellable, Job};
use super::run::{RETIRE_BATCH, Retired};
use super::work::AnyBox;
use crate::{Error, Result, TaskStatus};

impl Engine {
    /// Puts a failed attempt back after its backoff. The task was accepted, so it goes
    /// back without waiting for room: accepted work is never dropped for lack of it.
    pub(super) fn retry(self: &Arc<Self>, job: Job, attempts: u32, error: String, slot: usize) {
        job.record.lock().error = Some(error);
        job.record.set_status(TaskStatus::Retrying);
        self.stats[job.record.opts.level].served[slot]
            .retried
            .fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.recorders {
            r.retried.increment();
        }
        let backoff = job
            .record
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
            let level = job.record.opts.level;
            let slot = engine.shared_slot();
            let mut sched = engine.lock_sched();
            // Checked under the queue's lock: a worker that saw the queue closed and
            // then found it empty under the same lock never misses a job put back here.
            if waited.is_none() || engine.closing.load(Ordering::SeqCst) {
                drop(sched);
                engine.finish(job, Err(Error::Cancelled), false, slot, None);
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
    pub(super) fn finish(
        &self,
        mut job: Job,
        outcome: Result<AnyBox>,
        ran: bool,
        slot: usize,
        retired: Option<&mut Retired>,
    ) -> Instant {
        let level = job.record.opts.level;
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
        let (stored, finished) = record.store(status, now, error, json, outcome);
        if let (Some(r), true) = (&self.recorders, ran)
            && let Some(run) = record.ran(finished)
        {
            r.run.record(run);
        }
        record.publish(stored);
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
    pub(super) fn retire(&self, batch: &mut Retired) {
        let (max, retention) = (self.config.max_records, self.config.retention);
        let mut sched = self.lock_sched();
        let index = &mut sched.index;
        for (now, id) in batch.drain(..) {
            index.retire(id, now, max, retention);
        }
    }
}
