//! What the engine knows about one task: its record (shared by the index, its job and
//! the running worker), the queued job, and the future that stops at a cancel.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::task::AtomicWaker;

use super::Options;
use super::work::{AnyBox, BoxWork};
use crate::{Error, Result, TaskId, TaskInfo, TaskStatus};

/// The part of a task's record that needs a lock: what only some tasks have (an
/// error, a recorded result, a value nobody took yet). Status, attempts and times are
/// atomics beside it, so a task that succeeds with its handle dropped takes no lock
/// at all.
#[derive(Debug)]
pub(super) struct State {
    pub(super) error: Option<String>,
    pub(super) result: Option<serde_json::Value>,
    /// The value or error, until the handle takes it (dropped at once when detached).
    pub(super) outcome: Option<Result<AnyBox>>,
}

/// Everything known about one task; shared by the queue's index, its job and the
/// running worker.
#[derive(Debug)]
pub(crate) struct Record {
    pub(super) id: TaskId,
    pub(super) name: Cow<'static, str>,
    /// Its level, priority, timeout and retries: fixed at enqueue, kept here rather
    /// than in its job so a job stays small to move between queues.
    pub(super) opts: Options,
    pub(super) queued: Instant,
    /// A [`TaskStatus`] (`status_code`). Written after the fields it sums up (times,
    /// the state under the lock) with `Release`, so a reader that sees a final status
    /// sees them too.
    status: AtomicU8,
    /// Attempts started; written only by the worker running the task.
    attempts: AtomicU32,
    /// When the latest attempt started and when the task finished, as nanoseconds
    /// since `queued` plus one (0: not yet).
    started: AtomicU64,
    finished: AtomicU64,
    pub(super) state: Mutex<State>,
    pub(super) cancel: AtomicBool,
    /// Wakes the running attempt when the task is cancelled.
    pub(super) run_waker: AtomicWaker,
    /// Wakes the handle when the task finishes.
    pub(super) handle_waker: AtomicWaker,
    /// Set when the handle is dropped: nobody will take the outcome.
    pub(super) detached: AtomicBool,
    /// Set once the task reached its final status.
    pub(super) done: AtomicBool,
}

impl Record {
    /// The record of a task just accepted: queued, no attempt yet.
    pub(super) fn new(id: TaskId, name: Cow<'static, str>, opts: Options, queued: Instant) -> Self {
        Self {
            id,
            name,
            opts,
            queued,
            status: AtomicU8::new(status_code(TaskStatus::Queued)),
            attempts: AtomicU32::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            state: Mutex::new(State {
                error: None,
                result: None,
                outcome: None,
            }),
            cancel: AtomicBool::new(false),
            run_waker: AtomicWaker::new(),
            handle_waker: AtomicWaker::new(),
            detached: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while this lock is held (only field writes), so a
        // poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn status(&self) -> TaskStatus {
        status_from(self.status.load(Ordering::Acquire))
    }

    pub(super) fn set_status(&self, status: TaskStatus) {
        self.status.store(status_code(status), Ordering::Release);
    }

    pub(super) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Acquire)
    }

    pub(super) fn started(&self) -> Option<Instant> {
        self.at(&self.started)
    }

    pub(super) fn finished(&self) -> Option<Instant> {
        self.at(&self.finished)
    }

    fn at(&self, field: &AtomicU64) -> Option<Instant> {
        match field.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.queued + Duration::from_nanos(n - 1)),
        }
    }

    /// Writes `at` into a time field; returns it as nanoseconds since `queued`. One
    /// subtraction of `Instant`s per time, reused for the metrics.
    fn stamp(&self, field: &AtomicU64, at: Instant) -> u64 {
        let nanos = u64::try_from(at.saturating_duration_since(self.queued).as_nanos())
            .unwrap_or(u64::MAX - 1);
        field.store(nanos + 1, Ordering::Release);
        nanos
    }

    /// Starts an attempt at `now`, unless the task was cancelled; returns its number
    /// and how long the task had waited since it was queued. Only the worker that
    /// runs the task calls it.
    pub(super) fn begin(&self, now: Instant) -> Option<(u32, u64)> {
        if self.cancel.load(Ordering::Acquire) || self.status() == TaskStatus::Cancelled {
            return None;
        }
        let attempts = self.attempts.load(Ordering::Relaxed) + 1;
        self.attempts.store(attempts, Ordering::Release);
        let waited = self.stamp(&self.started, now);
        self.set_status(TaskStatus::Running);
        Some((attempts, waited))
    }

    /// Nanoseconds from the latest attempt's start to `finished_nanos` (since
    /// `queued`), if an attempt started.
    pub(super) fn ran(&self, finished_nanos: u64) -> Option<u64> {
        match self.started.load(Ordering::Acquire) {
            0 => None,
            n => Some(finished_nanos.saturating_sub(n - 1)),
        }
    }

    /// Writes the final status, and the outcome for the handle unless it was dropped;
    /// returns whether the outcome was kept, and the finishing time as nanoseconds
    /// since `queued`. [`publish`](Self::publish) follows. Takes the lock only for
    /// what needs it (an error, a result, a value to keep).
    pub(super) fn store(
        &self,
        status: TaskStatus,
        now: Instant,
        error: Option<String>,
        json: Option<serde_json::Value>,
        outcome: Result<AnyBox>,
    ) -> (bool, u64) {
        let finished = self.stamp(&self.finished, now);
        let wanted = !self.detached.load(Ordering::SeqCst);
        if wanted || error.is_some() || json.is_some() {
            let mut s = self.lock();
            if error.is_some() {
                s.error = error;
            }
            if json.is_some() {
                s.result = json;
            }
            if wanted {
                s.outcome = Some(outcome);
            }
        }
        // After the lock is released: a handle that found no value under the lock
        // finds the status not final yet, and waits to be woken.
        self.set_status(status);
        (wanted, finished)
    }

    /// Marks the task done and wakes its handle. A handle dropped since
    /// [`store`](Self::store) may have looked at `done` too early to free the value,
    /// so it is freed here: `done` is written and `detached` read again, both
    /// sequentially consistent, so the second of the two to run frees it.
    pub(super) fn publish(&self, stored: bool) {
        self.done.store(true, Ordering::SeqCst);
        if !self.detached.load(Ordering::SeqCst) {
            self.handle_waker.wake();
        } else if stored {
            self.lock().outcome.take();
        }
    }

    pub(super) fn info(&self, clock: &Clock) -> TaskInfo {
        // The status first: once final, the times and the error below are final too.
        let status = self.status();
        let (started, finished, attempts) = (self.started(), self.finished(), self.attempts());
        let s = self.lock();
        TaskInfo {
            id: self.id,
            name: self.name.to_string(),
            status,
            priority: self.opts.priority,
            queued_at: clock.system(self.queued),
            started_at: started.map(|t| clock.system(t)),
            finished_at: finished.map(|t| clock.system(t)),
            attempts,
            error: s.error.clone(),
            result: s.result.clone(),
        }
    }
}

/// A status as stored in a record's atomic.
fn status_code(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Queued => 0,
        TaskStatus::Running => 1,
        TaskStatus::Retrying => 2,
        TaskStatus::Completed => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 5,
    }
}

fn status_from(code: u8) -> TaskStatus {
    match code {
        0 => TaskStatus::Queued,
        1 => TaskStatus::Running,
        2 => TaskStatus::Retrying,
        3 => TaskStatus::Completed,
        4 => TaskStatus::Failed,
        _ => TaskStatus::Cancelled,
    }
}

/// Maps `Instant`s (cheap, monotonic) to wall-clock times for snapshots.
#[derive(Debug)]
pub(super) struct Clock {
    pub(super) instant: Instant,
    pub(super) system: SystemTime,
}

impl Clock {
    pub(super) fn system(&self, at: Instant) -> SystemTime {
        self.system + at.saturating_duration_since(self.instant)
    }
}

/// A queued job.
pub(super) struct Job {
    pub(super) record: Arc<Record>,
    pub(super) work: BoxWork,
    /// Whether it took a unit of its level's bound (a retried job re-enters without
    /// one: it was accepted already).
    pub(super) holds_room: bool,
    /// The span current where the job was enqueued: the parent of its `task.run`
    /// spans, so a run is found under the request that queued it. `Span::none()` when
    /// debug spans were off. Boxed, and only when there is one: a job is moved
    /// between queues, and most carry none.
    pub(super) cause: Option<Box<tracing::Span>>,
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
            s.error = Some("the queue was dropped before the task finished".into());
            if !self.record.detached.load(Ordering::Acquire) {
                s.outcome = Some(Err(Error::Cancelled));
            }
        }
        self.record.set_status(TaskStatus::Cancelled);
        self.record.handle_waker.wake();
    }
}

/// Resolves to `None` as soon as the record is cancelled, else to the inner output.
pub(super) struct Cancellable<'a, F> {
    pub(super) record: &'a Record,
    pub(super) inner: F,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::handle::TaskHandle;
    use crate::engine::work::{no_json, once};
    use futures_util::FutureExt;

    fn record(id: u64) -> Arc<Record> {
        Arc::new(Record::new(
            TaskId::from_u64(id),
            "t".into(),
            Options::NONE,
            Instant::now(),
        ))
    }

    fn job(record: &Arc<Record>) -> Job {
        Job {
            record: Arc::clone(record),
            work: once(async { Ok::<u8, std::io::Error>(1) }, no_json),
            holds_room: false,
            cause: None,
        }
    }

    #[test]
    fn a_new_record_is_queued_without_attempts() {
        let r = record(7);
        let clock = Clock {
            instant: r.queued,
            system: SystemTime::UNIX_EPOCH,
        };
        let info = r.info(&clock);
        assert_eq!(
            (info.id, info.status, info.attempts),
            (r.id, TaskStatus::Queued, 0)
        );
        assert_eq!(info.queued_at, SystemTime::UNIX_EPOCH);
        assert!(info.started_at.is_none() && info.finished_at.is_none());
    }

    #[test]
    fn a_job_dropped_unfinished_cancels_its_record_and_tells_its_handle() {
        let r = record(1);
        let handle = TaskHandle::<u8>::new(Arc::clone(&r));
        drop(job(&r));
        assert_eq!(r.status(), TaskStatus::Cancelled);
        assert!(
            r.lock()
                .error
                .as_deref()
                .is_some_and(|e| e.contains("dropped"))
        );
        match handle.now_or_never() {
            Some(Err(Error::Cancelled)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_detached_job_keeps_no_outcome_and_a_finished_one_is_left_alone() {
        let r = record(2);
        r.detached.store(true, Ordering::Release);
        drop(job(&r));
        assert_eq!(r.status(), TaskStatus::Cancelled);
        assert!(r.lock().outcome.is_none(), "nobody would take it");

        let r = record(3);
        r.set_status(TaskStatus::Completed);
        r.done.store(true, Ordering::Release);
        drop(job(&r));
        assert_eq!(r.status(), TaskStatus::Completed);
    }

    #[test]
    fn a_cancel_ends_the_wrapped_future_at_its_next_poll() {
        let r = record(4);
        let mut waiting = Cancellable {
            record: &r,
            inner: std::future::pending::<()>(),
        };
        assert!((&mut waiting).now_or_never().is_none());
        r.cancel.store(true, Ordering::Release);
        assert_eq!(waiting.now_or_never(), Some(None));
        let done = Cancellable {
            record: &record(5),
            inner: std::future::ready(9),
        };
        assert_eq!(done.now_or_never(), Some(Some(9)));
    }
}
