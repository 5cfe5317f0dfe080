//! What callers hold: a task's handle, and a shutdown's report.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::record::Record;
use crate::{Error, Result, TaskId};

/// What a shutdown left undone.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DrainReport {
    /// Tasks that finished (any final status) while the queue drained.
    pub drained: u64,
    /// Tasks that never started: cancelled when the deadline passed.
    pub not_started: Vec<TaskId>,
    /// Tasks that were running when the deadline passed, and were cancelled.
    pub aborted: Vec<TaskId>,
}

impl DrainReport {
    /// `true` when everything accepted ran to the end.
    pub fn is_complete(&self) -> bool {
        self.not_started.is_empty() && self.aborted.is_empty()
    }
}

/// A handle to one task's outcome: await it for the value, or drop it to detach (the
/// task still runs and its record still tells its outcome).
#[must_use = "a dropped handle detaches the task; keep it to learn its outcome"]
pub struct TaskHandle<T> {
    record: Arc<Record>,
    _value: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.record.id)
            .finish()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(record: Arc<Record>) -> Self {
        Self {
            record,
            _value: std::marker::PhantomData,
        }
    }

    /// The task's id, for status queries and cancellation.
    pub fn id(&self) -> TaskId {
        self.record.id
    }

    /// Lets the task run on without anyone awaiting its value (dropping the handle
    /// does the same); returns its id.
    pub fn detach(self) -> TaskId {
        self.record.id
    }
}

impl<T: 'static> Future for TaskHandle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.record.handle_waker.register(cx.waker());
        let mut s = self.record.lock();
        match s.outcome.take() {
            Some(outcome) => Poll::Ready(outcome.and_then(|value| {
                value
                    .downcast::<T>()
                    .map(|v| *v)
                    .map_err(|_| Error::Failed("task value of an unexpected type".into()))
            })),
            // Finished and already taken: a handle polled after it was ready.
            None if self.record.status().is_finished() => Poll::Ready(Err(Error::Cancelled)),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        // A handle dropped before its task finished (the common case for a detached
        // task) takes no lock: the worker sees `detached` and keeps no value. The
        // worker stores `done` after the value and reads `detached` again after that
        // (both sequentially consistent), so whichever of the two comes second frees
        // a value the other raced with.
        self.record.detached.store(true, Ordering::SeqCst);
        if self.record.done.load(Ordering::SeqCst) {
            self.record.lock().outcome.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskStatus;
    use futures_util::FutureExt;
    use std::time::Instant;

    /// A queued record with id `id`.
    fn record(id: u64) -> Arc<Record> {
        Arc::new(Record::new(
            TaskId::from_u64(id),
            "t".into(),
            crate::engine::Options::NONE,
            Instant::now(),
        ))
    }

    /// The worker's side of a success: store the value (whether a handle wants it).
    fn store_one(r: &Record) -> bool {
        r.store(
            TaskStatus::Completed,
            Instant::now(),
            None,
            None,
            Ok(Box::new(1u8)),
        )
        .0
    }

    fn finished(value: Result<Box<dyn std::any::Any + Send>>) -> Arc<Record> {
        let r = record(1);
        r.lock().outcome = Some(value);
        r.set_status(TaskStatus::Completed);
        r
    }

    #[test]
    fn a_handle_takes_the_value_once() {
        let r = finished(Ok(Box::new(42u32)));
        let mut h = TaskHandle::<u32>::new(Arc::clone(&r));
        assert_eq!((&mut h).now_or_never().map(|v| v.ok()), Some(Some(42)));
        // Polled again after it was ready: the value is gone, not handed out twice.
        assert!(matches!(
            (&mut h).now_or_never(),
            Some(Err(Error::Cancelled))
        ));
    }

    #[test]
    fn a_value_of_another_type_is_an_error_not_a_panic() {
        let h = TaskHandle::<String>::new(finished(Ok(Box::new(1u8))));
        assert!(matches!(h.now_or_never(), Some(Err(Error::Failed(_)))));
    }

    #[test]
    fn a_running_task_keeps_its_handle_waiting_and_a_dropped_handle_frees_the_value() {
        let r = record(2);
        let h = TaskHandle::<u8>::new(Arc::clone(&r));
        assert_eq!(h.id(), TaskId::from_u64(2));
        let mut h = h;
        assert!((&mut h).now_or_never().is_none());
        let stored = store_one(&r);
        r.publish(stored);
        drop(h);
        assert!(r.detached.load(Ordering::Acquire));
        assert!(r.lock().outcome.is_none());
    }

    #[test]
    fn a_handle_dropped_between_the_value_and_done_still_frees_the_value() {
        // The handle's drop takes no lock when the task has not finished; the worker,
        // which stored the value before the handle went, frees it when it publishes.
        let r = record(3);
        let h = TaskHandle::<u8>::new(Arc::clone(&r));
        let stored = store_one(&r);
        assert!(stored, "a live handle wants the value");
        drop(h);
        assert!(
            r.lock().outcome.is_some(),
            "not done yet: the handle left it"
        );
        r.publish(stored);
        assert!(r.lock().outcome.is_none());
        // Detached before the end: no value is kept at all.
        let r2 = record(4);
        drop(TaskHandle::<u8>::new(Arc::clone(&r2)));
        assert!(!store_one(&r2));
        assert!(r2.lock().outcome.is_none());
    }
}
