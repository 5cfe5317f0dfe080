//! The worker loop: take a job, run one attempt (panic caught, timeout applied,
//! cancellation checked on every poll), then retry it or finish it.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::record::{Job, Record};
use super::stats::own_add;
use super::work::{AnyBox, Work};
use super::{CountOut, Engine, Retry};
use crate::{Error, Result, TaskId};

/// Finished tasks a worker has not yet retired: (finishing time, id).
pub(super) type Retired = Vec<(Instant, TaskId)>;

/// Jobs a worker may take from a long single-level queue beyond the one it runs.
pub(super) const TAKE_AHEAD: usize = 15;

/// A task shorter than this lets its worker take jobs ahead.
pub(super) const SHORT_TASK: Duration = Duration::from_micros(100);

/// Places a worker owes its bound at most before it gives them back.
pub(super) const GIVE_BATCH: usize = 16;

/// Finished records a worker retires at once.
pub(super) const RETIRE_BATCH: usize = 32;

/// A task cancelled, panicked or failed: what the worker does next.
enum Ending {
    Done(Result<AnyBox>),
    Retry(String),
}

impl Engine {
    /// The worker's next job: from its own few taken ahead, or from the queue (taking a
    /// few more ahead when `short`: its last task was short).
    fn pop(&self, ahead: &mut VecDeque<Job>, short: bool) -> Option<Job> {
        if let Some(job) = ahead.pop_front() {
            return Some(job);
        }
        let mut sched = self.lock_sched();
        let job = sched.pop()?;
        // With one level, a long queue and short tasks, take a few more while holding
        // the lock: the lock is what producer and workers contend on. Never with
        // priorities, where a task taken ahead would make a later high-priority one
        // wait; and a worker whose task turned out long gives back what it took ahead
        // once another worker is idle (`give_back`), so a long task holds up little.
        if let ([queue], true) = (sched.queues.as_mut_slice(), short) {
            let more = (queue.len() / (2 * self.config.workers)).min(TAKE_AHEAD);
            ahead.extend(queue.drain(..more));
        }
        if !sched.is_empty() {
            // More is waiting: pass the wake-up on so another idle worker takes it.
            self.wake_one();
        }
        Some(job)
    }

    pub(super) async fn worker(self: Arc<Self>, slot: usize) {
        // When a worker goes straight from one task to the next, the first one's
        // finishing time is the next one's start: one clock read saved per task (a
        // clock read is a good part of a no-op task's cost).
        let mut last_finish: Option<Instant> = None;
        let mut retired = Retired::with_capacity(RETIRE_BATCH);
        let mut ahead = VecDeque::with_capacity(TAKE_AHEAD);
        let mut short = false;
        let mut owed = vec![0usize; self.room.len()];
        loop {
            // Registering as a waiter costs a lock inside `Notify`: only done when the
            // queue looked empty, and then the queue is checked again before sleeping
            // so a push in between is not missed.
            let job = match self.pop(&mut ahead, short) {
                Some(job) => job,
                None => {
                    // Nothing to do: retire what this worker finished before it sleeps.
                    if !retired.is_empty() {
                        self.retire(&mut retired);
                    }
                    let notified = self.work.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // Counted before the last look at the queue: a producer that pushes
                    // after that look sees the count and signals (`wake_one`).
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    let _awake = CountOut(&self.sleepers);
                    // A worker about to look for the last time clears the flag too:
                    // the wake-up it stood for may have been used up by a worker that
                    // found a job without sleeping (a stored permit is not passed on),
                    // and a producer that saw the flag set before this clear pushed
                    // before the look below, so nothing is left without a worker.
                    self.waking.store(false, Ordering::SeqCst);
                    // Read before the last look at the queue: once closed, nothing new
                    // is put in (see `retry`), so an empty queue now stays empty.
                    let closing = self.closing.load(Ordering::SeqCst);
                    match self.pop(&mut ahead, false) {
                        Some(job) => job,
                        None if closing => return,
                        None => {
                            last_finish = None;
                            notified.await;
                            // Cleared before this worker looks at the queue: a job
                            // pushed after the look found it cleared and wakes again.
                            self.waking.store(false, Ordering::SeqCst);
                            continue;
                        }
                    }
                }
            };
            // Places go back to the bound in one atomic operation per batch taken
            // ahead, not one per task: the bound's count is the line producers and
            // workers fight over. Only started tasks are owed, so fewer than the bound
            // ever wait; owing stops at the batch's last task, before any sleep, and
            // before a task that may be long.
            if job.holds_room {
                owed[job.record.opts.level] += 1;
            }
            if ahead.is_empty() || !short || owed.iter().any(|&n| n >= GIVE_BATCH) {
                self.give_owed(&mut owed);
            }
            own_add(&self.stats[job.record.opts.level].served[slot].taken, 1);
            // The last task was long and a worker idles: what this one took ahead
            // would wait behind the next long task, so it goes back to the queue.
            if !short && !ahead.is_empty() && self.sleepers.load(Ordering::Relaxed) > 0 {
                self.give_back(&mut ahead);
            }
            let before = last_finish;
            last_finish = self.run(job, last_finish.take(), slot, &mut retired).await;
            short = matches!((before, last_finish), (Some(a), Some(b)) if b.saturating_duration_since(a) < SHORT_TASK);
        }
    }

    /// Wakes one sleeping worker, if any sleeps and no wake-up is on its way already.
    pub(super) fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0
            && !self.waking.load(Ordering::SeqCst)
            && !self.waking.swap(true, Ordering::SeqCst)
        {
            self.work.notify_one();
        }
    }

    /// The counter slot of everything that is not a worker (cancels, retry timers).
    pub(super) fn shared_slot(&self) -> usize {
        self.config.workers
    }

    /// Gives back the places of the tasks this worker started.
    fn give_owed(&self, owed: &mut [usize]) {
        for (room, n) in self.room.iter().zip(owed.iter_mut()) {
            if *n > 0 {
                room.give_n(*n);
                *n = 0;
            }
        }
    }

    pub(super) fn release_room(&self, job: &Job) {
        if job.holds_room {
            self.room[job.record.opts.level].give();
        }
    }

    /// Returns jobs taken ahead to the front of the queue, for an idle worker.
    fn give_back(&self, ahead: &mut VecDeque<Job>) {
        let mut sched = self.lock_sched();
        if let [queue] = sched.queues.as_mut_slice() {
            while let Some(job) = ahead.pop_back() {
                queue.push_front(job);
            }
        }
        drop(sched);
        self.wake_one();
    }

    /// Marks the record running, unless it was cancelled while it waited; returns the
    /// attempt number and its start.
    fn begin(&self, record: &Record, now: Option<Instant>) -> Option<(u32, Instant)> {
        let now = now.unwrap_or_else(Instant::now);
        let (attempts, waited) = record.begin(now)?;
        if attempts == 1
            && let Some(r) = &self.recorders
        {
            r.wait.record(waited);
        }
        Some((attempts, now))
    }

    /// Runs one attempt; returns when it finished, if the task did.
    async fn run(
        self: &Arc<Self>,
        mut job: Job,
        now: Option<Instant>,
        slot: usize,
        retired: &mut Retired,
    ) -> Option<Instant> {
        let level = job.record.opts.level;
        let Some((attempts, started)) = self.begin(&job.record, now) else {
            return Some(self.finish(job, Err(Error::Cancelled), false, slot, Some(retired)));
        };
        if !job.work.as_mut().start() {
            // Only a plain future can be out of attempts, and it is never retried.
            let used = Error::Failed("the task's future was already used".into());
            return Some(self.finish(job, Err(used), false, slot, Some(retired)));
        }
        own_add(&self.stats[level].served[slot].running, 1);
        let retry = job.record.opts.retry.filter(|_| job.work.retryable());
        // A child of the span that enqueued the task (a root when there was none),
        // not of the worker's: the run is found under the request that asked for it.
        let span = tracing::debug_span!(
            parent: job.cause.as_deref().and_then(tracing::Span::id),
            "task.run",
            queue = self.config.name.as_str(),
            task = &*job.record.name,
            task_id = %job.record.id,
            attempt = attempts,
            outcome = tracing::field::Empty
        );
        let ending = self
            .attempt(
                &job.record,
                job.work.as_mut(),
                job.record.opts.timeout,
                &span,
                retry,
                attempts,
            )
            .await;
        if !span.is_disabled() {
            span.record(
                "outcome",
                match &ending {
                    Ending::Done(Ok(_)) => "ok",
                    Ending::Done(Err(_)) => "failed",
                    Ending::Retry(_) => "retry",
                },
            );
        }
        own_add(&self.stats[level].served[slot].running, u64::MAX);
        match ending {
            Ending::Done(outcome) => Some(self.finish(job, outcome, true, slot, Some(retired))),
            Ending::Retry(error) => {
                if let Some(r) = &self.recorders {
                    r.run.record_duration(started.elapsed());
                }
                self.retry(job, attempts, error, slot);
                None
            }
        }
    }

    async fn attempt(
        &self,
        record: &Record,
        work: Pin<&mut dyn Work>,
        timeout: Option<Duration>,
        span: &tracing::Span,
        retry: Option<Retry>,
        attempts: u32,
    ) -> Ending {
        let outcome = Guarded {
            record,
            work,
            // Boxed, and only with a limit: most tasks have none, and an inline timer
            // would make every attempt's future larger to move.
            deadline: timeout.map(|limit| (limit, Box::pin(tokio::time::sleep(limit)))),
            span,
        }
        .await;
        let failure = match outcome {
            Ok(value) => return Ending::Done(Ok(value)),
            Err(Error::Cancelled) => return Ending::Done(Err(Error::Cancelled)),
            Err(e) => e,
        };
        match retry {
            Some(r) if attempts < r.attempts && !self.closing.load(Ordering::Acquire) => {
                Ending::Retry(failure.to_string())
            }
            _ => Ending::Done(Err(failure)),
        }
    }
}

/// One attempt, guarded: its panic caught, its time limited, a cancel seen on every
/// poll, its span entered while it runs (only when the span is enabled). One small
/// future instead of a stack of adapters (cancel, catch, timeout, instrument), each of
/// which would move the attempt into itself.
struct Guarded<'a> {
    record: &'a Record,
    work: Pin<&'a mut dyn Work>,
    deadline: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    span: &'a tracing::Span,
}

impl Future for Guarded<'_> {
    type Output = Result<AnyBox>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.record.cancel.load(Ordering::Acquire) {
            return Poll::Ready(Err(Error::Cancelled));
        }
        let work = this.work.as_mut();
        let span = this.span;
        // Catching a panic of a poll costs nothing until one happens.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            work.poll_attempt(cx)
        }));
        match polled {
            Ok(Poll::Ready(Ok(value))) => return Poll::Ready(Ok(value)),
            Ok(Poll::Ready(Err(text))) => return Poll::Ready(Err(Error::Failed(text))),
            Err(panic) => {
                return Poll::Ready(Err(Error::Panicked(cortex_support::panic_message(&*panic))));
            }
            Ok(Poll::Pending) => {}
        }
        // As `tokio::time::timeout`: the attempt is polled first, then its limit.
        if let Some((limit, sleep)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Error::TimedOut(*limit)));
        }
        // Only an attempt that waits needs waking by a cancel: registered after the
        // poll (an attempt that finishes at once never pays for it), then the flag is
        // read again so a cancel between the two is not missed.
        this.record.run_waker.register(cx.waker());
        if this.record.cancel.load(Ordering::Acquire) {
            return Poll::Ready(Err(Error::Cancelled));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskStatus;
    use crate::engine::{EngineConfig, Policy};

    fn engine() -> Arc<Engine> {
        Engine::start(EngineConfig {
            name: "unit".into(),
            workers: 1,
            capacity: 4,
            levels: 1,
            policy: Policy::Strict,
            enqueue_timeout: Duration::from_secs(1),
            retention: Duration::from_secs(60),
            max_records: 10,
            metrics: None,
        })
        .expect("start")
    }

    #[tokio::test]
    async fn an_attempt_begins_running_and_counted_unless_cancelled() {
        let engine = engine();
        let r = Record::new(
            TaskId::from_u64(1),
            "t".into(),
            crate::engine::Options::NONE,
            Instant::now(),
        );
        let t0 = Instant::now();
        assert_eq!(engine.begin(&r, Some(t0)), Some((1, t0)));
        assert_eq!(r.status(), TaskStatus::Running);
        assert_eq!(r.started(), Some(t0));
        // A retry's attempt counts on.
        assert_eq!(engine.begin(&r, Some(t0)).map(|(n, _)| n), Some(2));
        r.cancel.store(true, Ordering::Release);
        assert_eq!(
            engine.begin(&r, None),
            None,
            "a cancelled task does not start"
        );
        assert_eq!(r.attempts(), 2);
        let done = Record::new(
            TaskId::from_u64(2),
            "t".into(),
            crate::engine::Options::NONE,
            Instant::now(),
        );
        done.set_status(TaskStatus::Cancelled);
        assert_eq!(engine.begin(&done, None), None);
        engine.close();
    }
}
