//! What a queue's owner asks of the engine: look tasks up, cancel them, wait for
//! idleness, shut down.

use std::time::{Duration, Instant};

use super::handle::DrainReport;
use super::{CountOut, Engine};
use crate::{Error, Result, TaskId, TaskInfo, TaskStatus};
use std::sync::atomic::Ordering;

impl Engine {
    /// Drops finished records older than `age` now (an hourly cleanup, on
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
        if record.status().is_finished() {
            return Err(Error::AlreadyFinished(id));
        }
        record.cancel.store(true, Ordering::Release);
        let level = record.opts.level.min(self.stats.len() - 1);
        let removed = self.lock_sched().remove(level, id);
        match removed {
            Some(job) => {
                self.release_room(&job);
                let slot = self.shared_slot();
                self.stats[level].served[slot]
                    .taken
                    .fetch_add(1, Ordering::Relaxed);
                self.finish(job, Err(Error::Cancelled), false, slot, None);
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
    pub(crate) async fn shutdown(&self, deadline: Duration) -> DrainReport {
        let before = self.stats(None).finished();
        self.close();
        let mut report = DrainReport::default();
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
